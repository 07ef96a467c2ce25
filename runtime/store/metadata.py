"""What a model is: its kind (llm, embedding, image, speech, transcription) and a summary for `show`.

Reads headers and small config files only, never weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from runtime.errors import StoreError
from runtime.store.ggufinfo import GGUFHeader, read_header
from runtime.store.selection import quant_of

EMBEDDING_ARCHES = {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
                    "neo-bert", "t5encoder", "xlm-roberta"}
DIFFUSION_ARCHES = {"sd1", "sd2", "sdxl", "sd3", "flux", "aura", "ltxv", "hyvid", "wan", "lumina2", "hidream",
                    "cosmos", "chroma", "qwen_image"}
_POOLING = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
CLASSIFIER_TENSORS = ("cls.output.weight", "cls.weight")  # llama.cpp's names for a sequence-classification head
MAX_CONFIG_BYTES = 64 << 20  # JSON configs and safetensors headers (safetensors allows 100 MB; real ones are KBs)


def describe(files: dict[str, list[Path]]) -> tuple[str, dict[str, Any]]:
    """(kind, metadata) from the files of one model, keyed by role."""
    model = files["model"][0]
    name = model.name.lower()
    if name.endswith(".gguf"):
        return _describe_gguf(files)
    if name == "model.bin" and "config" in files:
        return "transcription", whisper_metadata(model.parent)
    if name.endswith(".onnx"):
        config = files.get("config", [model.with_name(model.name + ".json")])[0]
        return "speech", piper_metadata(config)
    if name.endswith((".safetensors", ".sft", ".ckpt")):
        return "image", _image_metadata(files)
    raise StoreError(f"Cannot tell what kind of model {model.name} is. Pass --kind.")


def _describe_gguf(files: dict[str, list[Path]]) -> tuple[str, dict[str, Any]]:
    weights = files["model"] + files.get("shard", [])
    headers = [read_header(p) for p in weights]
    first = headers[0]
    names = [n for h in headers for n in h.tensors]
    if first.architecture in DIFFUSION_ARCHES or (not first.architecture and _image_family(names) != "unknown"):
        meta = _image_metadata(files)
        meta["quantization"] = quant_of(weights[0].name)
        return "image", meta
    meta = gguf_metadata(first, weights[0])
    meta["parameters"] = sum(h.parameter_count for h in headers)
    meta["shards"] = len(weights)
    meta["has_mmproj"] = "mmproj" in files
    return text_kind(meta), meta


def text_kind(meta: dict[str, Any]) -> str:
    """A GGUF text model's kind from gguf_metadata's summary: rerank for a cross-encoder (rank pooling, or a
    classification head: llama.cpp's converter writes no pooling for those), embedding for an encoder or a
    pooling model."""
    if meta.get("pooling") == "rank" or meta.get("has_classifier"):
        return "rerank"
    is_embedding = meta.get("architecture") in EMBEDDING_ARCHES or meta.get("pooling") not in (None, "none")
    return "embedding" if is_embedding else "llm"


def gguf_metadata(header: GGUFHeader, path: Path) -> dict[str, Any]:
    """The header's summary; a value of the wrong type (a string context length, a NaN) is left out."""
    template = _text(header.values.get("tokenizer.chat_template"))
    pooling = _count(header.arch_value("pooling_type"))
    return {
        "format": "gguf",
        "architecture": header.architecture,
        "name": _text(header.values.get("general.name")),
        "size_label": _text(header.values.get("general.size_label")),
        "parameters": header.parameter_count,
        "quantization": _file_type(header.values.get("general.file_type")) or quant_of(path.name),
        "context_length": _count(header.arch_value("context_length")),
        "embedding_length": _count(header.arch_value("embedding_length")),
        "block_count": _count(header.arch_value("block_count")),
        **_attention(header),
        "pooling": _POOLING.get(pooling, str(pooling)) if pooling is not None else None,
        "has_classifier": any(name in header.tensors for name in CLASSIFIER_TENSORS),
        "has_chat_template": bool(template),
        "chat_template": template,
    }


def _attention(header: GGUFHeader) -> dict[str, Any]:
    """Head counts and sizes, for the KV-cache estimate: grouped-query attention caches fewer heads."""
    heads = _count(header.arch_value("attention.head_count"))
    embedding = _count(header.arch_value("embedding_length"))
    head_size = embedding // heads if heads and embedding else None
    return {
        "head_count": heads,
        "head_count_kv": _count(header.arch_value("attention.head_count_kv")) or heads,
        "key_length": _count(header.arch_value("attention.key_length")) or head_size,
        "value_length": _count(header.arch_value("attention.value_length")) or head_size,
    }


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _file_type(value: Any) -> str | None:
    value = _count(value)
    if value is None:
        return None
    import gguf

    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return str(value)
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def whisper_metadata(folder: Path) -> dict[str, Any]:
    """Multilingual Whisper vocabularies have 51865+ tokens; the English-only (.en) ones 51864."""
    vocab = _vocabulary_size(folder)
    return {
        "format": "ctranslate2",
        "architecture": "whisper",
        "vocabulary_size": vocab,
        "multilingual": vocab is not None and vocab >= 51865,
    }


def _vocabulary_size(folder: Path) -> int | None:
    for candidate in sorted(folder.glob("vocabulary*")):
        if candidate.suffix == ".json":
            vocabulary = read_json(candidate)
            return len(vocabulary) if isinstance(vocabulary, (list, dict)) else None
        return len(_read_text(candidate).splitlines())
    tokenizer = folder / "tokenizer.json"
    if tokenizer.is_file():
        data = _object(read_json(tokenizer))
        added = data.get("added_tokens")
        return len(_object(_object(data.get("model")).get("vocab"))) + (len(added) if isinstance(added, list) else 0)
    return None


def piper_metadata(config: Path) -> dict[str, Any]:
    data = _object(read_json(config))
    language, audio = _object(data.get("language")), _object(data.get("audio"))
    speakers = data.get("num_speakers", 1)
    return {
        "format": "piper",
        "language": _text(language.get("code")) or _text(_object(data.get("espeak")).get("voice")),
        "sample_rate": _count(audio.get("sample_rate")),
        "quality": _text(audio.get("quality")),
        "speakers": speakers if _count(speakers) else 1,
        "speaker_names": sorted(_object(data.get("speaker_id_map"))),
        "phoneme_type": _text(data.get("phoneme_type")),
    }


def read_json(path: Path) -> Any:
    """A small JSON file from a model folder; anything else is one clear StoreError."""
    try:
        return json.loads(_read_text(path))
    except (ValueError, RecursionError):
        raise StoreError(f"{path.name} is not valid JSON. Check the file or download it again.") from None


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise StoreError(f"Cannot read {path.name}: {exc.strerror or exc}.") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise StoreError(f"{path.name} is larger than {MAX_CONFIG_BYTES >> 20} MB; it is not a model config.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise StoreError(f"{path.name} is not UTF-8 text. Check the file or download it again.") from None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _image_metadata(files: dict[str, list[Path]]) -> dict[str, Any]:
    model = files["model"][0]
    names = _tensor_names(model)
    return {
        "format": model.suffix.lstrip(".").lower(),
        "family": _image_family(names),
        "has_vae": "vae" in files,
        "has_taesd": "taesd" in files,
    }


def _tensor_names(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return list(read_header(path).tensors)
    if suffix in (".safetensors", ".sft"):
        with path.open("rb") as f:
            try:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size)) if size <= MAX_CONFIG_BYTES else None
            except (struct.error, ValueError, RecursionError):
                header = None
        if not isinstance(header, dict):
            raise StoreError(f"{path.name} is not a valid safetensors file: its header is damaged. "
                             "Check the file or download it again.")
        return [n for n in header if n != "__metadata__"]
    return []  # .ckpt is a pickle: not opened without torch


def _image_family(names: list[str]) -> str:
    def has(*parts: str) -> bool:
        return any(part in name for name in names for part in parts)

    if has("double_blocks.", "single_transformer_blocks."):
        return "flux"
    if has("joint_blocks.", "transformer_blocks.0.ff_context"):
        return "sd3"
    if has("conditioner.embedders.1", "label_emb.0"):
        return "sdxl"
    if has("cond_stage_model.model.transformer"):
        return "sd2"
    if has("input_blocks.", "cond_stage_model.transformer."):
        return "sd1"
    if any(name.startswith(("decoder.layers.", "encoder.layers.")) for name in names):
        return "taesd"
    if has("first_stage_model.", "decoder.up_blocks.", "decoder.up."):
        return "vae"
    return "unknown"
