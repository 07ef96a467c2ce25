"""LlamaEngine directly on the real small models: sampling, stops, logprobs, cancel, options."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from greedy import greedy_prefix

from runtime.engines.base import SamplingParams, Usage
from runtime.engines.llama.engine import LlamaEngine
from runtime.errors import InvalidRequestError
from runtime.options import EngineOptions
from runtime.spec import ModelSpec


def prompt(engine: Any, text: str = "Tell me a story.") -> list[int]:
    return engine.tokenize(engine.render_chat([{"role": "user", "content": text}], None))


def run(engine: Any, params: SamplingParams, n: int = 1,
        tokens: list[int] | None = None) -> tuple[list[str], list[Any], Usage]:
    usage = Usage()
    deltas = list(engine.generate(tokens or prompt(engine), params, n, usage, threading.Event()))
    texts = ["".join(d.text for d in deltas if d.index == i) for i in range(n)]
    return texts, deltas, usage


def test_template_tokens_and_bos(smollm_engine: Any) -> None:
    text = smollm_engine.render_chat([{"role": "user", "content": "hi"}], None)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    tokens = smollm_engine.tokenize(text)
    assert tokens[0] == 1 and tokens.count(1) == 3  # <|im_start|> is a single special token, not doubled
    assert smollm_engine.detokenize(smollm_engine.tokenize("hello world", add_special=False)) == "hello world"


def test_seeded_choices_repeat_and_differ(smollm_engine: Any, smollm_gguf: Path) -> None:
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=42)
    runs = []
    for _ in range(2):
        engine = LlamaEngine(ModelSpec("smol", "llm", "llama", {"model": smollm_gguf}))
        try:
            runs.append(run(engine, params, n=2))
        finally:
            engine.close()
    (first, _, usage), (again, _, _) = runs
    assert first == again and first[0] != first[1]
    assert usage.prompt_tokens > 0 and usage.completion_tokens == 24
    assert run(smollm_engine, params, n=2)[0] == first  # a warm engine repeats it too (test_seeded_repeats.py)
    unseeded = SamplingParams(max_tokens=12, temperature=1.0)
    run(smollm_engine, unseeded, n=2)
    assert run(smollm_engine, unseeded, n=2)[2].cached_tokens > 0  # a repeat reuses the prompt's KV cache


def scored(deltas: list[Any]) -> list[Any]:
    return [lp for d in deltas for lp in d.logprobs]


def test_greedy_takes_the_likeliest_token_and_logprobs_only_when_asked(smollm_engine: Any) -> None:
    _, deltas, _ = run(smollm_engine, SamplingParams(max_tokens=8, temperature=0))
    assert all(not d.logprobs for d in deltas)
    again, deltas, _ = run(smollm_engine, SamplingParams(max_tokens=8, temperature=0, logprobs=2))
    tokens = scored(deltas)
    assert len(tokens) == 8 and all(lp.logprob <= 0 and len(lp.top) == 2 for lp in tokens)
    assert all(lp.logprob >= lp.top[0][1] - 1e-4 for lp in tokens)  # greedy: each is the likeliest
    assert "".join(lp.token for lp in tokens) == again[0]


def test_stop_penalties_and_bias(smollm_engine: Any) -> None:
    greedy = SamplingParams(max_tokens=16, temperature=0, logprobs=2)
    plain, deltas, _ = run(smollm_engine, greedy)
    reference = scored(deltas)
    # Cut before the first near-tie: up to there every greedy run of the request takes the same tokens.
    stop = greedy_prefix(reference)[4:7]
    assert len(stop) == 3, reference
    stopped, deltas, _ = run(smollm_engine, replace(greedy, stop=[stop]))
    assert stopped[0] == plain[0][: plain[0].index(stop)] and deltas[-1].finish_reason == "stop"
    # Banning the first token by id: the first token sampled is another one (compared as tokens, not
    # as text: "There" starts with "The" but is another token).
    banned = smollm_engine.tokenize(reference[0].token, add_special=False)
    assert len(banned) == 1
    _, deltas, _ = run(smollm_engine, replace(greedy, max_tokens=2, logit_bias={banned[0]: -100}))
    assert scored(deltas)[0].bytes != reference[0].bytes
    penalised, _, _ = run(smollm_engine, SamplingParams(max_tokens=16, temperature=0, frequency_penalty=2.0))
    assert penalised[0] != plain[0]


def test_cancel_stops_generation(smollm_engine: Any) -> None:
    cancel = threading.Event()
    deltas = []
    for delta in smollm_engine.generate(prompt(smollm_engine), SamplingParams(max_tokens=50), 1, Usage(), cancel):
        deltas.append(delta)
        cancel.set()
    assert len(deltas) == 1


def test_bad_token_ids_and_infill_are_client_errors(smollm_engine: Any, minilm_engine: Any) -> None:
    with pytest.raises(InvalidRequestError, match="out of range"):
        list(smollm_engine.generate([5, 10**7], SamplingParams(max_tokens=1), 1, Usage(), threading.Event()))
    with pytest.raises(InvalidRequestError, match="out of range"):
        minilm_engine.embed([[101, -3]], threading.Event())
    with pytest.raises(InvalidRequestError) as caught:
        smollm_engine.infill("def f(", "return 1")
    assert caught.value.param == "suffix"
    with pytest.raises(InvalidRequestError, match="embedding model"):
        list(minilm_engine.generate([101], SamplingParams(max_tokens=1), 1, Usage(), threading.Event()))


def test_engine_info_and_capabilities(smollm_engine: Any, minilm_engine: Any) -> None:
    assert smollm_engine.capabilities == {"chat", "completions", "embeddings", "tokenize", "detokenize"}
    assert minilm_engine.capabilities == {"embeddings", "tokenize", "detokenize"}
    assert smollm_engine.info()["context_length"] == 8192 and smollm_engine.info()["chat_template"] == "model"
    assert minilm_engine.info()["context_length"] == 512 and minilm_engine.info()["embedding_length"] == 384


def test_engine_options_reach_llama_cpp(smollm_gguf: Path) -> None:
    import llama_cpp.llama_cpp as ll

    options = EngineOptions.from_dict({"ctx_size": 1024, "parallel": 2, "threads": 1, "n_gpu_layers": "0",
                                       "cache_type_k": "q8_0", "flash_attn": "off", "no_mmap": True})
    spec = ModelSpec("smol", "llm", "llama", {"model": smollm_gguf}, {}, options)
    engine = LlamaEngine(spec)
    try:
        context = engine._batch._ctx
        assert ll.llama_n_ctx(context) == 1024 and engine.context_length == 1024
        assert ll.llama_n_threads(context) == 1 and engine._batch.parallel == 2
        assert run(engine, SamplingParams(max_tokens=4, temperature=0), n=1)[0][0]  # still generates
    finally:
        engine.close()


def test_a_grammar_llama_cpp_rejects_is_a_client_error(smollm_engine: Any) -> None:
    params = SamplingParams(max_tokens=2, grammar='root ::= "a" missing')
    with pytest.raises(InvalidRequestError) as caught:
        run(smollm_engine, params)
    assert caught.value.param == "response_format"
    assert run(smollm_engine, SamplingParams(max_tokens=4, grammar='root ::= "yes" | "no"'))[0][0] in ("yes", "no")
