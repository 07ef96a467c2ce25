"""Worker lifecycle, memory budget, queues and the proxy to workers.

`Scheduler` is imported lazily: the CLI reads `runtime.scheduler.state` without loading the
server's web stack.
"""

from __future__ import annotations

from typing import Any

from runtime.scheduler.keepalive import parse_keep_alive

__all__ = ["Scheduler", "parse_keep_alive"]


def __getattr__(name: str) -> Any:
    if name == "Scheduler":
        from runtime.scheduler.scheduler import Scheduler

        return Scheduler
    raise AttributeError(name)
