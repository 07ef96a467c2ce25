"""The GPU check's model (tests/bench/random_gguf.py): llama.cpp loads it as a llama model with SmolLM2's
tokenizer, its numbers are finite, and the sizes it reports are the file's."""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import random_gguf  # noqa: E402


@pytest.mark.parametrize("type_name", list(random_gguf.TYPES))
def test_llama_cpp_runs_it_with_smollm2s_tokenizer(tmp_path: Path, smollm_gguf: Path, type_name: str) -> None:
    path = tmp_path / "model.gguf"
    random_gguf.write(path, random_gguf.SHAPES["tiny"], type_name)
    model = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False)
    reference = llama_cpp.Llama(str(smollm_gguf), vocab_only=True, verbose=False)
    assert (model.n_embd(), model.n_vocab()) == (64, reference.n_vocab())
    text = b"The capital of France is"
    tokens = model.tokenize(text)
    assert tokens == reference.tokenize(text)
    assert model.metadata["tokenizer.chat_template"] == reference.metadata["tokenizer.chat_template"]
    model.eval(tokens)
    logits = np.asarray(model.scores[: len(tokens)])
    assert logits.shape == (len(tokens), model.n_vocab())
    assert np.isfinite(logits).all() and logits.std() > 0


def test_sizes_are_the_files(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    size = random_gguf.write(path, random_gguf.SHAPES["tiny"], "q4_0")
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert "output.weight" in tensors
    assert tensors["blk.0.ffn_gate.weight"].tensor_type == gguf.GGMLQuantizationType.Q4_0
    assert size["bytes"] == sum(int(t.n_bytes) for t in tensors.values())
    assert size["bytes_per_token"] == size["bytes"] - int(tensors["token_embd.weight"].n_bytes)
    assert size["params"] == sum(int(t.n_elements) for t in tensors.values())
