"""Where the running server is: pid, host, port and start time, in the state dir for the CLI.

A record is trusted only while its pid is alive and is the very process that wrote it (same
kernel start time), so a reused pid is never mistaken for the server, nor signalled.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.config import Paths
from runtime.errors import ConflictError

STATE_FILE = "server.json"


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    port: int
    started: float
    start_ticks: int | None = None  # the process's start time in clock ticks since boot (Linux)

    @property
    def url(self) -> str:
        """The address to connect to: a wildcard bind is reached through loopback."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def is_running(self) -> bool:
        return process_start_ticks(self.pid) == self.start_ticks if self.start_ticks else _pid_alive(self.pid)


def state_path(paths: Paths) -> Path:
    return paths.state / STATE_FILE


def publish(paths: Paths, pid: int, host: str, port: int) -> ServerInfo:
    info = ServerInfo(pid, host, port, time.time(), process_start_ticks(pid))
    paths.state.mkdir(parents=True, exist_ok=True)
    temporary = state_path(paths).with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(info)))
    temporary.replace(state_path(paths))
    return info


def read(paths: Paths) -> ServerInfo | None:
    try:
        return ServerInfo(**json.loads(state_path(paths).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def retract(paths: Paths, pid: int) -> None:
    """Remove the record if it is still the one for `pid`."""
    info = read(paths)
    if info is None or info.pid == pid:
        state_path(paths).unlink(missing_ok=True)


def running(paths: Paths) -> ServerInfo | None:
    """The live server of these paths; a record left by a dead server is removed."""
    info = read(paths)
    if info is not None and not info.is_running():
        retract(paths, info.pid)
        return None
    return info


def refuse_second_server(paths: Paths) -> None:
    """A second server would publish over the first one's record and hide it from `stacklet stop`."""
    info = running(paths)
    if info is not None and info.pid != os.getpid():
        raise ConflictError(f"A stacklet server is already running at {info.url} (pid {info.pid}). "
                            "Stop it with `stacklet stop`.")


def process_start_ticks(pid: int) -> int | None:
    """Start time of a live (non-zombie) process from /proc/<pid>/stat; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
