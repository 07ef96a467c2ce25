"""What serving costs besides llama.cpp: CPU milliseconds per streamed token in the server process, in the
worker's threads other than its busiest, one per physical core (llama.cpp's compute threads, the decode thread
among them), and in this client, at each concurrency. On a machine whose cores all run compute threads,
every one of those milliseconds is taken from llama.cpp.

Run: python tests/bench/bench_overhead.py [--streams 1,8] [--requests 4] [--max-tokens 128] [--fake]
Uses SmolLM2 (tests/testmodels.py), its chat completions streamed with the load generator of `stacklet bench`.
--fake serves the fake engine instead, one decode step every 5 ms (no model: its decode thread is the
"compute"), so each token reaches the client on a wake of its own, as from a fast GPU; tok/s against the
steps' pace (200 per stream) shows whether the serving path keeps up, and the CPU columns are its own cost.
The engine gets as many sequences as the most streams.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import testmodels  # noqa: E402
from bench_vs_llama_server import MODEL, sample  # noqa: E402
from serverproc import local_record, server_process  # noqa: E402

from runtime.engines.llama.batch import physical_cores  # noqa: E402
from runtime.options import EngineOptions  # noqa: E402
from runtime.store.registry import ModelRecord  # noqa: E402

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
FAKE_STEP_S = 0.005


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each of the process's threads, by thread id."""
    seconds = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        seconds[tid] = (int(fields[11]) + int(fields[12])) / TICKS_PER_S
    return seconds


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def spent(before: dict[str, float], after: dict[str, float]) -> list[float]:
    return sorted((after[tid] - before.get(tid, 0.0) for tid in after), reverse=True)


def measure(root: str, key: str, server_pid: int, streams: int, requests: int, max_tokens: int,
            compute: int) -> dict[str, float]:
    """`compute`: the worker's busiest threads that count as the engine's (llama.cpp's, the decode thread among
    them)."""
    worker_pid = children(server_pid)[0]
    server, worker, client = thread_cpu(server_pid), thread_cpu(worker_pid), own_cpu()
    level = asyncio.run(sample(root, key, streams, requests, max_tokens, 64))
    tokens = level["tokens"]
    worker_threads = spent(worker, thread_cpu(worker_pid))
    per_token = 1000 / tokens
    return {"streams": streams, "tok_s": level["aggregate_tok_s"], "wall_ms": level["wall_s"] * per_token,
            "server_ms": sum(spent(server, thread_cpu(server_pid))) * per_token,
            "worker_ms": sum(worker_threads[compute:]) * per_token,
            "compute_ms": sum(worker_threads[:compute]) * per_token,
            "client_ms": (own_cpu() - client) * per_token}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,8")
    parser.add_argument("--requests", type=int, default=4, help="requests per stream")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--fake", action="store_true", help="the fake engine: the serving path alone")
    args = parser.parse_args()
    levels = [int(n) for n in args.streams.split(",")]
    options = EngineOptions(parallel=max(levels))
    if args.fake:  # a decode step every 5 ms: a token per stream per wake, as from a fast GPU
        record = ModelRecord(name=MODEL, kind="llm", source={"type": "fake"}, engine="fake", options=options,
                             keep_alive=-1.0, metadata={"fake_delay": FAKE_STEP_S})
    else:
        record = local_record(MODEL, "llm", {"model": testmodels.smollm_gguf()}, options=options, keep_alive=-1.0)
    compute = 1 if args.fake else physical_cores()
    with TemporaryDirectory() as home, server_process(Path(home), [record]) as (root, key):
        asyncio.run(sample(root, key, 1, 1, 8, 64))  # load the model
        server_pid = children(os.getpid())[0]
        print("| streams | tok/s | wall ms per token | CPU ms per token: server | worker outside compute "
              "| client | compute threads |")
        print("|---|---|---|---|---|---|---|")
        for streams in levels:
            row = measure(root, key, server_pid, streams, streams * args.requests, args.max_tokens, compute)
            print(f"| {streams} | {row['tok_s']:.1f} | {row['wall_ms']:.2f} | {row['server_ms']:.3f} | "
                  f"{row['worker_ms']:.3f} | {row['client_ms']:.3f} | {row['compute_ms']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
