"""Issue 20's GPU measurement (run.sh runs it on the device machine): the GPU's copy bandwidth, a random-weight
GGUF (tests/bench/random_gguf.py), then stacklet against llama-server with every layer offloaded
(tests/bench/bench_vs_llama_server.py), and one stream's decode against the bandwidth bound: the bytes one
token reads (every weight but the embedding rows), at the measured copy rate.

Run: python tests/bench/gpu/check.py --llama-server PATH [--out DIR] [--shape 8b] [--type f16]
[--streams 1,8,32] [--prompt-tokens 64,2000]
Writes DIR/bench.json (the benchmark's JSON) and prints its table and the bound.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import random_gguf  # noqa: E402
from bench_vs_llama_server import LLAMA_SERVER, print_table  # noqa: E402

COPY_BYTES = 4 << 30
COPIES = 10


def copy_bandwidth() -> float | None:
    """Bytes per second a device-to-device copy moves (read plus written); None without a CUDA GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    source = torch.empty(COPY_BYTES, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(COPIES):
        target.copy_(source)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    del source, target
    torch.cuda.empty_cache()  # the servers get the memory back
    return 2 * COPY_BYTES * COPIES / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", required=True)
    parser.add_argument("--out", type=Path, default=Path("/tmp"))
    parser.add_argument("--shape", choices=random_gguf.SHAPES, default="8b")
    parser.add_argument("--type", choices=random_gguf.TYPES, default="f16")
    parser.add_argument("--streams", default="1,8,32")
    parser.add_argument("--prompt-tokens", default="64,2000")
    args = parser.parse_args()
    bandwidth = copy_bandwidth()
    print(f"copy bandwidth: {bandwidth / 1e12:.2f} TB/s" if bandwidth else "no CUDA GPU: no bandwidth bound",
          flush=True)
    model = Path(f"/tmp/random-{args.shape}-{args.type}.gguf")
    started = time.perf_counter()
    size = random_gguf.write(model, random_gguf.SHAPES[args.shape], args.type)
    print(f"{model.name}: {size['params'] / 1e9:.2f} B parameters, {size['bytes'] / 1e9:.2f} GB, "
          f"written in {time.perf_counter() - started:.0f} s", flush=True)
    parallel = max(int(n) for n in args.streams.split(","))
    bench = subprocess.run([sys.executable, str(BENCH / "bench_vs_llama_server.py"), "--llama-server",
                            args.llama_server, "--model", str(model), "--gpu-layers", "all", "--rounds", "1",
                            "--streams", args.streams, "--prompt-tokens", args.prompt_tokens, "--parallel",
                            str(parallel), "--layouts", "pool", "--json"], check=True, stdout=subprocess.PIPE)
    result = json.loads(bench.stdout)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"model": size, "bandwidth": bandwidth, **result}))
    names = ["stacklet", LLAMA_SERVER]
    print_table(result["cells"], names)
    if bandwidth:
        bound = bandwidth / size["bytes_per_token"]
        one = min(result["cells"], key=lambda cell: (cell["streams"], cell["prompt_tokens"]))
        print(f"\nbandwidth bound {bound:.0f} tok/s; one stream, {one['prompt_tokens']}-token prompt: "
              + ", ".join(f"{name} {one[name]['tok_s']:.0f} tok/s ({one[name]['tok_s'] / bound:.0%})"
                          for name in names))


if __name__ == "__main__":
    main()
