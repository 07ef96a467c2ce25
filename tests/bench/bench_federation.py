"""Two stacklet nodes behind a front node versus one node alone: concurrent streams of SmolLM2, aggregate
tokens/s, time to first token, and the server process's own CPU per relayed token (the front router's,
against the one node's local relay, which is the bar).

Run: python tests/bench/bench_federation.py [--streams 8] [--requests 16] [--max-tokens 64] [--json]
(`--streams 2 --requests 2 --max-tokens 8` is a quick check that it runs). Linux: CPU from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "federation")]

import httpx  # noqa: E402
import testmodels  # noqa: E402
from nodes import admin, node  # noqa: E402
from serverproc import local_record  # noqa: E402

from cli.commands.bench import _level  # noqa: E402  (the load generator of `stacklet bench`)
from runtime.config import Settings  # noqa: E402
from runtime.server import state  # noqa: E402

CHAT = "SmolLM2-135M-Instruct"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (not its workers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(home: Path) -> int:
    info = state.running(Settings.load(environ={"STACKLET_HOME": str(home)}).paths)
    assert info is not None, "the server published no state record"
    return info.pid


def client(root: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=root + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=600)


async def warm_up(nodes: list[tuple[str, str]]) -> None:
    """Load the model on every node, so no load lands inside a measurement."""
    for root, key in nodes:
        async with client(root, key) as warm:
            await _level(warm, CHAT, 1, 1, 4, 16)


async def measure(root: str, key: str, model: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    async with client(root, key) as bench:
        await _level(bench, model, 1, 1, 4, 16)  # the first request's own set-up (connections, caches)
        before = cpu_seconds(pid)
        level = await _level(bench, model, args.streams, args.requests, args.max_tokens, 64)
        used = cpu_seconds(pid) - before
    return {**asdict(level), "server_cpu_s": used,
            "server_cpu_ms_per_token": 1000 * used / level.tokens if level.tokens else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    record = local_record(CHAT, "llm", {"model": testmodels.smollm_gguf()})
    with TemporaryDirectory() as temp, ExitStack() as stack:
        homes = {name: Path(temp) / name for name in ("node-a", "node-b", "front")}
        a_root, a_key = stack.enter_context(node(homes["node-a"], [record], check_interval=10))
        b_root, b_key = stack.enter_context(node(homes["node-b"], [record], check_interval=10))
        root, key = stack.enter_context(node(homes["front"], check_interval=10))
        api = admin(root, key)
        for name, url, upstream_key in (("node-a", a_root, a_key), ("node-b", b_root, b_key)):
            api.post("/v1/remotes", json={"name": name, "url": url + "/v1", "api_key": upstream_key}).raise_for_status()
        api.put("/v1/routes/fed", json={"targets": [f"node-a:{CHAT}", f"node-b:{CHAT}"]}).raise_for_status()
        asyncio.run(warm_up([(a_root, a_key), (b_root, b_key)]))
        results = {
            "one_node": asyncio.run(measure(a_root, a_key, CHAT, server_pid(homes["node-a"]), args)),
            "two_nodes_behind_front": asyncio.run(measure(root, key, "fed", server_pid(homes["front"]), args)),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.streams} streams, {args.requests} requests, {args.max_tokens} tokens each")
    print(f"{'setup':<24} {'tok/s':>8} {'TTFT p50':>9} {'errors':>7} {'server CPU/token':>17}")
    for name, result in results.items():
        per_token = result["server_cpu_ms_per_token"]
        print(f"{name:<24} {result['aggregate_tok_s']:>8.1f} {result['ttft_p50_s']:>8.2f}s {result['errors']:>7} "
              f"{'-' if per_token is None else f'{per_token:.3f} ms':>17}")


if __name__ == "__main__":
    main()
