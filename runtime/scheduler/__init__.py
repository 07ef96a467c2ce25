"""Worker lifecycle, memory budget, queues and the proxy to workers."""

from runtime.scheduler.keepalive import parse_keep_alive
from runtime.scheduler.scheduler import Scheduler

__all__ = ["Scheduler", "parse_keep_alive"]
