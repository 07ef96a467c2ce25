"""CLI start-up wall time: `stacklet --help` (target < 0.25 s) and `stacklet list`.

Run: python tests/bench/bench_cli_startup.py [runs]. Uses the installed console script and a
throwaway STACKLET_HOME; prints min and median per command, with bare `python -c pass` for scale.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def wall_times(command: list[str], runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    script = shutil.which("stacklet", path=os.path.dirname(sys.executable)) or "stacklet"
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "STACKLET_HOME": home}
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "stacklet --help": [script, "--help"],
            "stacklet list": [script, "list"],
        }
        for label, command in cases.items():
            times = wall_times(command, runs, env)
            print(f"{label:18} min {min(times):.3f} s  median {statistics.median(times):.3f} s  ({runs} runs)")


if __name__ == "__main__":
    main()
