"""stacklet against llama.cpp's llama-server on one machine: aggregate tok/s and time to first token for
each cell of (concurrent streams, prompt length), stacklet with its shared KV pool and with `--kv-slots`.
The servers run side by side and take turns cell by cell, the order reversing every round, so the machine's
drift falls on all alike. Prints every sample, then per cell the medians and the median of the per-round
ratios to llama-server.

Run: python tests/bench/bench_vs_llama_server.py --llama-server PATH [--rounds 2] [--streams 1,8,16]
[--prompt-tokens 64,500,2000] [--max-tokens 128] [--parallel 8] [--waves 2] [--layouts pool,slots] [--json]
[--model GGUF] [--gpu-layers all]
Uses SmolLM2 (tests/testmodels.py) unless --model names a GGUF with its tokenizer (tests/bench/random_gguf.py
writes bigger ones); --gpu-layers offloads that many layers (or all) in every server. All servers get
`--parallel` sequences and the same KV cells: enough for each of llama-server's slots (ctx / parallel) to hold
the longest prompt (or the 1,000-token prefixes) and its answer.
Run it on an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import testmodels  # noqa: E402
from serverproc import llama_server_process, local_record, server_process  # noqa: E402

from cli.commands.bench import PREFIX_TOKENS, _level, _prefix  # noqa: E402  (the load generator of `stacklet bench`)
from runtime.options import EngineOptions  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"
LLAMA_SERVER = "llama-server"
LAYOUTS = {"pool": "stacklet", "slots": "stacklet kv-slots"}
SLOT_ROUNDING = 256  # llama.cpp pads each slot's context to this


def context_size(parallel: int, prompt_tokens: int, max_tokens: int) -> int:
    """KV cells for `parallel` slots that each hold the longest prompt (with room for the chat template
    and the tokenizer's spread) and its answer."""
    per_slot = int(prompt_tokens * 1.3) + max_tokens + 64
    return parallel * -(-per_slot // SLOT_ROUNDING) * SLOT_ROUNDING


@contextmanager
def llama_server(binary: str, model: Path, ctx_size: int, parallel: int,
                 gpu_layers: str | None) -> Iterator[tuple[str, str]]:
    """(root URL, key) of llama-server with the same model, slots, KV room and offload; one thread per core."""
    from runtime.engines.llama.batch import physical_cores

    with llama_server_process(binary, model, threads=physical_cores(), parallel=parallel, ctx_size=ctx_size,
                              gpu_layers=gpu_layers) as root:
        yield root, "none"


@contextmanager
def stacklet(model: Path, ctx_size: int, parallel: int, slots: bool,
             gpu_layers: str | None) -> Iterator[tuple[str, str]]:
    """(root URL, admin key) of `python -m runtime` serving the model with those options."""
    options = EngineOptions(ctx_size=ctx_size, parallel=parallel, kv_slots=slots or None, n_gpu_layers=gpu_layers)
    record = local_record(MODEL, "llm", {"model": model}, options=options,
                          keep_alive=-1.0)  # never unloaded while the other servers take their turns
    with TemporaryDirectory() as home, server_process(Path(home), [record]) as running:
        yield running


async def sample(root: str, key: str, streams: int, requests: int, max_tokens: int,
                 prompt_tokens: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=root + "/v1", headers={"Authorization": f"Bearer {key}"},
                                 timeout=1800, limits=httpx.Limits(max_connections=streams + 4)) as client:
        return asdict(await _level(client, MODEL, streams, requests, max_tokens, prompt_tokens))


async def prefix_reuse(root: str, key: str) -> dict[str, float]:
    """`stacklet bench`'s time to first token for 1,000-token prefixes, cold and warm."""
    async with httpx.AsyncClient(base_url=root + "/v1", headers={"Authorization": f"Bearer {key}"},
                                 timeout=1800) as client:
        return await _prefix(client, MODEL)


def warm_up(servers: dict[str, tuple[str, str]], prompt_lengths: list[int]) -> None:
    """Load the model and touch every prompt length once, so no load lands inside a measurement."""
    for root, key in servers.values():
        for length in prompt_lengths:
            asyncio.run(sample(root, key, 1, 1, 8, length))


def summary(samples: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    cells: dict[tuple[int, int], dict[str, list[dict[str, Any]]]] = {}
    for s in samples:
        cells.setdefault((s["streams"], s["prompt_tokens"]), {}).setdefault(s["server"], []).append(s)
    rows = []
    for (streams, prompt), by_server in cells.items():
        theirs = by_server[LLAMA_SERVER]
        row: dict[str, Any] = {"streams": streams, "prompt_tokens": prompt}
        for name in names:
            ours = by_server[name]
            row[name] = {"tok_s": statistics.median(s["aggregate_tok_s"] for s in ours),
                         "ttft_p50_s": statistics.median(s["ttft_p50_s"] for s in ours),
                         "errors": sum(s["errors"] for s in ours)}
            if name != LLAMA_SERVER:
                row[name]["ratio"] = statistics.median(
                    a["aggregate_tok_s"] / b["aggregate_tok_s"] for a, b in zip(ours, theirs, strict=True))
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], names: list[str]) -> None:
    print("| streams | prompt tokens | " + " | ".join(f"{n} tok/s" for n in names) + " | "
          + " | ".join(f"{n} / llama-server" for n in names if n != LLAMA_SERVER) + " | TTFT p50 s ("
          + " / ".join(names) + ") |")
    print("|---" * (3 + 2 * len(names) - 1) + "|")
    for r in rows:
        rates = " | ".join(f"{r[n]['tok_s']:.1f}" for n in names)
        ratios = " | ".join(f"{r[n]['ratio']:.2f}x" for n in names if n != LLAMA_SERVER)
        ttfts = " / ".join(f"{r[n]['ttft_p50_s']:.2f}" for n in names)
        print(f"| {r['streams']} | {r['prompt_tokens']} | {rates} | {ratios} | {ttfts} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", required=True, help="a llama-server binary")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--streams", default="1,8,16")
    parser.add_argument("--prompt-tokens", default="64,500,2000")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--waves", type=int, default=2, help="requests per sample = streams * waves")
    parser.add_argument("--layouts", default="pool,slots", help="stacklet's KV layouts: pool, slots or both")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--model", type=Path, help="a GGUF text model (default: SmolLM2)")
    parser.add_argument("--gpu-layers", help="layers to offload to the GPU in every server: a count or 'all'")
    args = parser.parse_args()
    model = args.model or testmodels.smollm_gguf()
    stream_levels = [int(n) for n in args.streams.split(",")]
    prompt_lengths = [int(n) for n in args.prompt_tokens.split(",")]
    layouts = [name for name in args.layouts.split(",") if name in LAYOUTS]
    ctx_size = context_size(args.parallel, max(*prompt_lengths, PREFIX_TOKENS), args.max_tokens)
    print(f"{args.parallel} sequences, {ctx_size} KV cells, {os.cpu_count()} CPUs", file=sys.stderr)
    samples = []
    with ExitStack() as stack:
        servers = {LAYOUTS[layout]: stack.enter_context(stacklet(model, ctx_size, args.parallel, layout == "slots",
                                                                 args.gpu_layers))
                   for layout in layouts}
        servers[LLAMA_SERVER] = stack.enter_context(llama_server(args.llama_server, model, ctx_size, args.parallel,
                                                                 args.gpu_layers))
        names = list(servers)
        warm_up(servers, prompt_lengths)
        for round_ in range(args.rounds):
            for prompt in prompt_lengths:
                for streams in stream_levels:
                    for name in names if round_ % 2 == 0 else names[::-1]:
                        level = asyncio.run(sample(*servers[name], streams, streams * args.waves,
                                                   args.max_tokens, prompt))
                        samples.append({"server": name, "round": round_ + 1, "streams": streams,
                                        "prompt_tokens": prompt, **level})
                        print(f"round {round_ + 1} {name:17} {streams:2} streams, {prompt:4}-token prompts: "
                              f"{level['aggregate_tok_s']:6.1f} tok/s, ttft p50 {level['ttft_p50_s']:.2f} s, "
                              f"{level['tokens']}/{level['requested_tokens']} tokens, {level['errors']} errors",
                              file=sys.stderr, flush=True)
        prefixes = {name: asyncio.run(prefix_reuse(*server)) for name, server in servers.items()}
    rows = summary(samples, names)
    if args.json:
        print(json.dumps({"ctx_size": ctx_size, "parallel": args.parallel, "cells": rows, "prefixes": prefixes,
                          "samples": samples}))
        return
    print_table(rows, names)
    print("\n| 1,000-token prefixes, time to first token s | cold | warm | 4 users taking turns | 8 at once |")
    print("|---|---|---|---|---|")
    for name, p in prefixes.items():
        print(f"| {name} | {p['cold_ttft_s']:.3f} | {p['warm_ttft_s']:.3f} | {p['warm_ttft_4_users_s']:.3f} "
              f"| {p['warm_ttft_8_at_once_s']:.3f} |")


if __name__ == "__main__":
    main()
