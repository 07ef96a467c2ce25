"""How many compute threads each decode gets: the cores this process may use that nothing else is using.

llama.cpp's compute threads meet at a barrier after every operation and spin while they wait, so one of
them descheduled by another busy process (a co-tenant, a second model's worker) stalls all of them: on two
cores a busy neighbour cut one stream from ~75 to ~4 tok/s. Twice a second the budget reads how much CPU
the rest of the machine took on this process's CPUs and sizes the next decodes to the cores left over; two
busy workers so settle on disjoint halves. The thread count does not change results: llama.cpp's CPU
kernels split work by rows, and 1 and 2 threads give bit-identical logprobs on SmolLM2.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SAMPLE_S = 0.5  # how often the count is reconsidered
STALE_S = 2.0  # a sample older than this (the engine was idle) says nothing about now
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (docker --cpus)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity mask is the limit
    return cpus


class ThreadBudget:
    def __init__(self, most: int) -> None:
        self.most = most
        self.current = most
        self._cpus = sorted(os.sched_getaffinity(0))
        self._last: tuple[float, float, float] | None = None  # (monotonic s, machine busy s, own busy s)

    def threads(self) -> int:
        """The thread count for the next decode."""
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < SAMPLE_S:
            return self.current
        sample = (now, *self._busy_seconds())
        if self._last is not None and now - self._last[0] < STALE_S:
            elapsed = sample[0] - self._last[0]
            others = ((sample[1] - self._last[1]) - (sample[2] - self._last[2])) / elapsed  # cores in use
            self.current = max(1, min(self.most, int(len(self._cpus) - others + 0.5)))
        self._last = sample
        return self.current

    def _busy_seconds(self) -> tuple[float, float]:
        """(CPU time spent on this process's CPUs by anything, by this process), since boot."""
        wanted = {f"cpu{n}" for n in self._cpus}
        busy = 0
        for line in Path("/proc/stat").read_text().splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] in wanted:
                user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
                busy += user + nice + system + irq + softirq + steal  # steal: the hypervisor gave it to another VM
        own = os.times()
        return busy / _TICKS_PER_S, own.user + own.system
