"""Speed on a busy machine: one stream while a co-tenant busy loop takes a core, and two models generating at
once, each model in its own process as stacklet's workers are. Compares the default thread budget (the
cores other processes leave free, runtime/engines/llama/threads.py) with a fixed count, and with
llama.cpp's own llama-server under the same load when one is given.

Run: python tests/bench/bench_busy.py [--llama-server PATH] [--rounds N]. Uses the real test models
(tests/testmodels.py). Run it on an otherwise quiet machine: it makes its own load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import testmodels  # noqa: E402
from serverproc import llama_server_process  # noqa: E402

CHAT = "<|im_start|>user\nWrite a long story about the sea.<|im_end|>\n<|im_start|>assistant\n"
TOKENS = 128
REQUESTS = 3  # per measurement; the median request's tok/s is reported


def child(threads: int | None) -> None:
    """One engine in this process: the median tok/s of REQUESTS single-stream requests, as JSON."""
    from runtime.engines.base import SamplingParams, Usage
    from runtime.engines.llama.batch import BatchEngine
    from runtime.options import EngineOptions

    engine = BatchEngine(testmodels.smollm_gguf(), EngineOptions(parallel=4, threads=threads), embedding=False)
    tokens = engine.vocab.tokenize(CHAT, parse_special=True)
    rates, used = [], []
    for index in range(REQUESTS + 1):
        usage, start = Usage(), time.perf_counter()
        params = SamplingParams(temperature=0.7, max_tokens=TOKENS)  # unseeded: seeded ones keep every thread
        for _ in engine.generate(tokens, params, 1, usage, threading.Event()):
            used.append(engine.stats()["threads"])
        if index:  # the first request warms up
            rates.append(usage.completion_tokens / (time.perf_counter() - start))
    engine.close()
    print(json.dumps({"tok_s": statistics.median(rates), "threads": statistics.median(used)}))


def run_children(threads: list[int | None]) -> list[dict[str, float]]:
    """Engines in separate processes, started together; each one's result."""
    fixed = [[] if t is None else ["--threads", str(t)] for t in threads]
    procs = [subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for args in fixed]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


@contextmanager
def busy_loop() -> Iterator[None]:
    """A co-tenant that keeps one core busy."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(1.0)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def server_rate(url: str) -> float:
    """llama-server's own timing of REQUESTS single-stream requests (after a warm-up): the median tok/s."""
    import httpx

    rates = []
    for index in range(REQUESTS + 1):
        body = {"prompt": CHAT, "n_predict": TOKENS, "temperature": 0.7, "seed": index, "cache_prompt": False}
        timings = httpx.post(url + "/completion", json=body, timeout=600).json()["timings"]
        if index:
            rates.append(timings["predicted_n"] / (timings["predicted_ms"] / 1000 + timings["prompt_ms"] / 1000))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--llama-server", help="a llama-server binary, to measure it under the same load")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        child(args.threads)
        return
    cores = len(os.sched_getaffinity(0))
    for round_ in range(1, args.rounds + 1):
        quiet = run_children([None])[0]
        with busy_loop():
            budget = run_children([None])[0]
            fixed = run_children([cores])[0]
        pair = run_children([None, None])
        pair_fixed = run_children([cores, cores])
        print(f"round {round_}: quiet {quiet['tok_s']:.1f} tok/s ({quiet['threads']:g} threads)")
        print(f"  busy loop, thread budget: {budget['tok_s']:.1f} tok/s = {budget['tok_s'] / quiet['tok_s']:.2f}x "
              f"of quiet ({budget['threads']:g} threads); fixed {cores} threads: {fixed['tok_s']:.1f} tok/s = "
              f"{fixed['tok_s'] / quiet['tok_s']:.2f}x")
        together, together_fixed = sum(r["tok_s"] for r in pair), sum(r["tok_s"] for r in pair_fixed)
        split = " + ".join(f"{r['threads']:g}" for r in pair)
        print(f"  two models at once, thread budget: {together:.1f} tok/s together = "
              f"{together / quiet['tok_s']:.2f}x of one alone ({split} threads); fixed {cores} threads: "
              f"{together_fixed:.1f} = {together_fixed / quiet['tok_s']:.2f}x")
        if args.llama_server:
            with llama_server_process(args.llama_server, testmodels.smollm_gguf(), threads=cores, parallel=4,
                                      ctx_size=4096) as url:
                server_quiet = server_rate(url)
                with busy_loop():
                    server_busy = server_rate(url)
            print(f"  llama-server -t {cores}: quiet {server_quiet:.1f} tok/s, busy loop {server_busy:.1f} tok/s = "
                  f"{server_busy / server_quiet:.2f}x")


if __name__ == "__main__":
    main()
