"""llama.cpp alone, no stacklet code: prompt and decode speed with N sequences of L tokens each held at once, in
one unified KV pool (stacklet's default) and with a KV stream per sequence (`--kv-slots`, llama-server's
explicit `-np`). In the pool every prompt chunk and every decoded token walks the cells of all sequences
(masked, not skipped); in streams only its own.

Run: python tests/bench/bench_kv_layout.py [NxL ...] (default 8x600 16x1000). Uses SmolLM2 (tests/testmodels.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llama_cpp.llama_cpp as ll  # noqa: E402
import testmodels  # noqa: E402

from runtime.engines.llama.batch import BATCH_TOKENS, amx_kernels, physical_cores  # noqa: E402

STEPS = 24


def context(model: Any, unified: bool, sequences: int, length: int) -> Any:
    params = ll.llama_context_default_params()
    params.n_ctx = sequences * (length + 256)
    params.n_batch = params.n_ubatch = BATCH_TOKENS
    params.n_seq_max = sequences
    params.kv_unified = unified
    params.n_threads = params.n_threads_batch = physical_cores()
    return ll.llama_init_from_model(model, params)


def fill(ctx: Any, batch: Any, sequences: int, length: int) -> float:
    """Prompt tokens/s for `length` tokens into each sequence, one after another, in chunks."""
    start_time = time.perf_counter()
    for seq in range(sequences):
        for start in range(0, length, BATCH_TOKENS):
            n = min(BATCH_TOKENS, length - start)
            for i in range(n):
                batch.token[i] = 100 + (start + i + 7 * seq) % 5000
                batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0], batch.logits[i] = start + i, 1, seq, 0
            batch.logits[n - 1], batch.n_tokens = 1, n
            assert ll.llama_decode(ctx, batch) == 0
    return sequences * length / (time.perf_counter() - start_time)


def decode(ctx: Any, batch: Any, sequences: int, length: int) -> float:
    """Seconds per step that decodes one token for every sequence."""
    start_time = time.perf_counter()
    for step in range(STEPS):
        for seq in range(sequences):
            batch.token[seq] = 200 + seq
            batch.pos[seq], batch.n_seq_id[seq], batch.seq_id[seq][0], batch.logits[seq] = length + step, 1, seq, 1
        batch.n_tokens = sequences
        assert ll.llama_decode(ctx, batch) == 0
    return (time.perf_counter() - start_time) / STEPS


def main() -> None:
    cells = [tuple(int(n) for n in cell.split("x")) for cell in sys.argv[1:] or ["8x600", "16x1000"]]
    ll.llama_backend_init()
    params = ll.llama_model_default_params()
    params.use_extra_bufts = not amx_kernels()  # as stacklet loads it (batch.py)
    model = ll.llama_model_load_from_file(str(testmodels.smollm_gguf()).encode(), params)
    for sequences, length in cells:
        for round_ in (1, 2):
            for unified in (True, False):
                ctx = context(model, unified, sequences, length)
                batch = ll.llama_batch_init(BATCH_TOKENS, 0, 1)
                prompt_rate = fill(ctx, batch, sequences, length)
                step = decode(ctx, batch, sequences, length)
                ll.llama_batch_free(batch)
                ll.llama_free(ctx)
                layout = "pool   " if unified else "streams"
                print(f"round {round_} {sequences}x{length} {layout}: prompts {prompt_rate:.0f} tok/s, "
                      f"decode step {1000 * step:.1f} ms = {sequences / step:.1f} tok/s", flush=True)
    ll.llama_model_free(model)


if __name__ == "__main__":
    main()
