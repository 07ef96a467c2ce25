"""One worker process: spawn `python -m runtime.worker`, wait until it answers, talk to it, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from runtime.errors import WorkerError
from runtime.http.logs import cut
from runtime.scheduler.worker_client import WorkerUnreachable, get_json
from runtime.spec import ModelSpec

log = logging.getLogger("stacklet.scheduler")

MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes; keep a margin
LOAD_TIMEOUT_S = 900.0  # big models on slow disks take minutes
STOP_GRACE_S = 5.0
STATUS_TIMEOUT_S = 2.0
OUTPUT_CHUNK = 65536


def socket_dir(state: Path) -> Path:
    """Where worker sockets live: the state dir, or a short private temp dir when that path is too long."""
    preferred = state / "workers"
    if len(str(preferred / "w0000000-000.sock").encode()) <= MAX_SOCKET_PATH:
        directory = preferred
    else:
        digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
        directory = Path(tempfile.gettempdir()) / f"stacklet-{digest}"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)  # uvicorn makes each socket world-writable; the directory keeps them private
    remove_stale(directory)
    return directory


def remove_stale(directory: Path) -> None:
    """Remove the sockets and spec files (w<server pid>-<n>.sock, .json) of servers that are gone: a server
    killed with SIGKILL leaves them."""
    for path in directory.glob("w*-*"):
        pid = path.name[1:].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerProcess:
    def __init__(self, spec: ModelSpec, socket_path: Path) -> None:
        self.spec = spec
        self.socket_path = socket_path
        self.spec_path = socket_path.with_suffix(".json")
        self.process: asyncio.subprocess.Process | None = None
        self.exited: asyncio.Task[int] | None = None
        self.status: dict[str, Any] = {}  # the worker's last GET /status answer
        self.stopping = False
        self._output: deque[str] = deque(maxlen=20)
        self._pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.exited is not None and not self.exited.done()

    async def start(self) -> dict[str, Any]:
        """Spawn the worker and wait until its engine is loaded; raises WorkerError on failure."""
        self.socket_path.unlink(missing_ok=True)
        self.spec_path.write_text(json.dumps(self.spec.to_json()))
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runtime.worker", "--spec-json", str(self.spec_path),
            "--socket", str(self.socket_path), "--parent-pid", str(os.getpid()),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        self._pump = asyncio.create_task(self._relay_output())
        self.exited = asyncio.create_task(self.process.wait())
        try:
            return await asyncio.wait_for(self._wait_ready(), LOAD_TIMEOUT_S)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> dict[str, Any]:
        assert self.exited is not None
        delay = 0.02
        while not self.exited.done():
            if await self.poll_status():
                return self.status
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        if self._pump:
            await self._pump  # the output ends with the worker's reason
        raise WorkerError(self._load_failure())

    def _load_failure(self) -> str:
        reasons = [line.removeprefix("error: ") for line in self._output if line.startswith("error: ")]
        if reasons:
            return f"The model '{self.spec.name}' failed to load: {reasons[-1]}"
        return f"The model '{self.spec.name}' failed to load; see the server log for details."

    async def _relay_output(self) -> None:
        """Copy the worker's log lines into the server's log, keeping the last few for error messages.

        Read in chunks, not lines: a line longer than asyncio's line limit would end the relay, and a worker
        whose output nobody reads blocks on its next write."""
        assert self.process and self.process.stdout
        pending = b""
        while chunk := await self.process.stdout.read(OUTPUT_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > OUTPUT_CHUNK:
                lines, pending = [*lines, pending], b""
            for raw in lines:
                self._relay_line(raw)
        if pending:
            self._relay_line(pending)

    def _relay_line(self, raw: bytes) -> None:
        line = cut(raw.decode(errors="replace").rstrip())
        self._output.append(line)
        sys.stderr.write(f"[worker {self.spec.name}] {line}\n")

    async def poll_status(self) -> bool:
        try:
            self.status = await asyncio.wait_for(get_json(self.socket_path, "/status"), STATUS_TIMEOUT_S)
        except (WorkerUnreachable, asyncio.TimeoutError):
            return False
        return True

    async def stop(self) -> None:
        """SIGTERM (the worker finishes what it can), SIGKILL after a grace period; frees the socket."""
        self.stopping = True
        if self.process and self.exited and not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), STOP_GRACE_S)
            except asyncio.TimeoutError:
                log.warning("worker for %s did not stop in %ss; killing it", self.spec.name, STOP_GRACE_S)
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.exited
        if self._pump:
            await self._pump
        self.socket_path.unlink(missing_ok=True)
        self.spec_path.unlink(missing_ok=True)

    def rss(self) -> int | None:
        """Resident memory of the worker in bytes (Linux), for `stacklet ps`."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None
