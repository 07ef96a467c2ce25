"""A random-weight GGUF of the llama architecture at a real model's shapes, for speed measurements on machines
too big for the test models (the GPU check, tests/bench/gpu/run.sh). Its tokenizer and chat template are
SmolLM2's (tests/testmodels.py), so every endpoint takes it as it takes SmolLM2; what it says is noise.

Run: python tests/bench/random_gguf.py OUT.gguf [--shape 8b] [--type q4_0]
Prints the file's parameters and the bytes one decoded token reads (every weight but the embedding rows).
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import testmodels  # noqa: E402


@dataclass(frozen=True)
class Shape:
    width: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int


# Llama 3.x's shapes (vocabulary aside: SmolLM2's has 49,152 tokens against Llama's 128,256), each with an
# output head of its own: one tied to the embedding would make a random model repeat its input.
SHAPES = {
    "tiny": Shape(width=64, layers=2, heads=4, kv_heads=2, ffn=128),
    "1b": Shape(width=2048, layers=16, heads=32, kv_heads=8, ffn=8192),
    "8b": Shape(width=4096, layers=32, heads=32, kv_heads=8, ffn=14336),
    "70b": Shape(width=8192, layers=80, heads=64, kv_heads=8, ffn=28672),
}
TYPES = {"f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
POOL_ROWS = 64  # distinct random rows per tensor; the rest repeat them, which changes no kernel's speed
WEIGHT_SCALE = 0.02
# The output head's rows are all distinct and scaled to logits of this spread, as a trained model's: a few
# hundred tokens within reach of the likeliest, the rest negligible. Flat logits (the other weights' scale)
# would make every server's sampler work on the whole vocabulary.
LOGIT_STD = 8.0


def tensor_shapes(shape: Shape, vocab: int) -> dict[str, tuple[int, int] | tuple[int]]:
    """GGUF tensor name -> numpy shape (rows = outputs), the way llama.cpp's converter names llama's tensors."""
    head_dim = shape.width // shape.heads
    kv_width = shape.kv_heads * head_dim
    layer = {"attn_norm": (shape.width,), "attn_q": (shape.width, shape.width), "attn_k": (kv_width, shape.width),
             "attn_v": (kv_width, shape.width), "attn_output": (shape.width, shape.width), "ffn_norm": (shape.width,),
             "ffn_gate": (shape.ffn, shape.width), "ffn_up": (shape.ffn, shape.width),
             "ffn_down": (shape.width, shape.ffn)}
    tensors: dict[str, tuple[int, int] | tuple[int]] = {"token_embd.weight": (vocab, shape.width)}
    for i in range(shape.layers):
        tensors |= {f"blk.{i}.{name}.weight": dims for name, dims in layer.items()}
    tensors["output_norm.weight"] = (shape.width,)
    tensors["output.weight"] = (vocab, shape.width)
    return tensors


@functools.cache
def _tokenizer_fields(source: Path) -> tuple[list[tuple[str, Any, Any, Any]], int]:
    """The source model's tokenizer and chat template fields (key, value, type, sub-type), and its vocabulary
    size; read once per process (seconds for SmolLM2's 49k tokens and merges)."""
    import gguf

    reader = gguf.GGUFReader(source)
    fields = [(key, field.contents(), field.types[0], field.types[1] if len(field.types) > 1 else None)
              for key, field in reader.fields.items() if key.startswith("tokenizer.")]
    return fields, len(reader.fields["tokenizer.ggml.tokens"].contents())


def _weights(rng: np.random.Generator, rows: int, cols: int, qtype, head: bool) -> np.ndarray:
    """A (rows, cols) weight in `qtype` as GGUF stores it: POOL_ROWS random rows, quantized, repeated (the
    output head: every row random)."""
    import gguf

    pool_rows, scale = (rows, LOGIT_STD / np.sqrt(cols)) if head else (min(rows, POOL_ROWS), WEIGHT_SCALE)
    pool = rng.standard_normal((pool_rows, cols), dtype=np.float32) * scale
    if qtype == gguf.GGMLQuantizationType.F16:
        return np.resize(pool.astype(np.float16), (rows, cols))
    quantized = gguf.quants.quantize(pool, qtype)
    return np.resize(quantized, (rows, quantized.shape[1]))


def write(out: Path, shape: Shape, type_name: str, seed: int = 0) -> dict[str, int]:
    """Write the model; tensors are made and written one at a time, so memory stays at one tensor."""
    import gguf

    qtype = gguf.GGMLQuantizationType[TYPES[type_name]]
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(f"random llama {shape.width}x{shape.layers} {type_name}")
    fields, vocab = _tokenizer_fields(testmodels.smollm_gguf())
    for key, value, value_type, sub_type in fields:
        writer.add_key_value(key, value, value_type, sub_type=sub_type)
    writer.add_context_length(131072)
    writer.add_embedding_length(shape.width)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.width // shape.heads)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                          "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[type_name])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    shapes = tensor_shapes(shape, vocab)
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    sizes = {}
    for name, dims in shapes.items():
        if len(dims) == 1:
            writer.add_tensor_info(name, dims, np.dtype(np.float32), dims[0] * 4)
            sizes[name] = dims[0] * 4
        else:
            rows, cols = dims
            nbytes = rows * cols // block * block_bytes
            writer.add_tensor_info(name, (rows, nbytes // rows), np.dtype(np.uint8), nbytes, raw_dtype=qtype)
            sizes[name] = nbytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, dims in shapes.items():
        data = np.ones(dims, np.float32) if len(dims) == 1 else _weights(rng, *dims, qtype, name == "output.weight")
        writer.write_tensor_data(data)
    writer.close()
    params = sum(int(np.prod(dims)) for dims in shapes.values())
    embedding = sizes["token_embd.weight"]  # a lookup reads one row, not the table
    return {"params": params, "bytes": sum(sizes.values()), "bytes_per_token": sum(sizes.values()) - embedding}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", choices=SHAPES, default="8b")
    parser.add_argument("--type", choices=TYPES, default="q4_0")
    args = parser.parse_args()
    size = write(args.out, SHAPES[args.shape], args.type)
    print(f"{args.out}: {size['params'] / 1e9:.2f} B parameters, {size['bytes'] / 1e9:.2f} GB, "
          f"{size['bytes_per_token'] / 1e9:.2f} GB read per decoded token")


if __name__ == "__main__":
    main()
