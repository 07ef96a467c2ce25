"""In-process workers for scheduler tests: the scheduler's worker interface without a worker process.

`InProcessWorker` loads the engine in the test process and serves the real worker app with uvicorn on
the worker's Unix socket, inside the running event loop, so requests and status polls still go over
HTTP on the socket. A test breaks one on demand: `crash()` ends it like a killed process (open
connections reset, a non-zero exit code), and `WorkerFarm.fail_next_load` makes the next start of a
model raise WorkerError. Pass a `WorkerFarm` as the Scheduler's `start_worker` and keep it to find the
workers it made.

Only for engines that stay inside the process: the fake engine's `fake_crash_after` calls os._exit and
would end the test run (use `crash()` instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from runtime.engines import load_engine
from runtime.errors import StackletError, WorkerError
from runtime.scheduler.process import LOAD_TIMEOUT_S, STOP_GRACE_S, WorkerProcess
from runtime.spec import ModelSpec
from runtime.worker.__main__ import GRACEFUL_SHUTDOWN_S
from runtime.worker.app import create_worker_app

log = logging.getLogger("stacklet.tests")

KILLED = -9  # the exit code of a worker that did not stop within the grace period


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: several run at once in the test process, and they must not
    take over (or, stopping out of order, leave behind) the test runner's SIGINT/SIGTERM handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class InProcessWorker(WorkerProcess):
    """A WorkerProcess whose "process" is a uvicorn server task in the test's event loop."""

    _numbers = itertools.count(1)

    def __init__(self, spec: ModelSpec, socket_path: Path, farm: WorkerFarm | None = None) -> None:
        super().__init__(spec, socket_path)
        self.farm = farm
        self.number = next(self._numbers)  # tells workers apart (they all share the test's pid)
        self.engine: Any = None
        self.server: _Server | None = None
        self.exit_code: int | None = None  # set when it crashes or is killed

    def __repr__(self) -> str:
        return f"<InProcessWorker #{self.number} {self.spec.name}>"

    @property
    def pid(self) -> int | None:
        return os.getpid() if self.server is not None else None

    async def start(self) -> dict[str, Any]:
        """Load the engine, serve the worker app on the socket and wait until /status answers; raises
        WorkerError when the load fails (as the real worker reports it)."""
        self.socket_path.unlink(missing_ok=True)
        if self.farm is not None:
            await self.farm.before_load(self)
        try:
            self.engine = load_engine(self.spec)
        except StackletError as exc:
            raise WorkerError(f"The model '{self.spec.name}' failed to load: {exc.message}") from exc
        except Exception as exc:
            log.exception("loading %s failed", self.spec.name)
            raise WorkerError(f"The model '{self.spec.name}' could not be loaded; see the server log.") from exc
        app = create_worker_app(self.engine, self.spec, self.socket_path)
        config = uvicorn.Config(app, uds=str(self.socket_path), log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        self.server = _Server(config)
        self.exited = asyncio.create_task(self._serve(), name=f"worker {self.spec.name} #{self.number}")
        try:
            return await asyncio.wait_for(self._wait_ready(), LOAD_TIMEOUT_S)
        except BaseException:
            await self.stop()
            raise

    async def _serve(self) -> int:
        """The worker's lifetime; the result is its exit code."""
        assert self.server is not None
        try:
            await self.server.serve()
        except SystemExit as exc:  # uvicorn exits this way when it cannot start
            return exc.code if isinstance(exc.code, int) else 1
        except asyncio.CancelledError:
            if self.exit_code is None:
                raise  # cancelled from outside: not one of ours
            # End the app's lifespan too (it would wait forever otherwise): the engine is closed and the
            # socket removed, as the scheduler's stop() would do after a real crash.
            await self.server.lifespan.shutdown()
        return self.exit_code if self.exit_code is not None else 0

    def crash(self, code: int = 1) -> None:
        """End now, as if the process died: the socket stops accepting, open connections are reset
        mid-answer (their requests see the disconnect and wind down), no graceful shutdown. `exited` then
        completes with `code`; await it to see the scheduler react."""
        assert self.server is not None and self.exited is not None, "the worker was never started"
        assert not self.exited.done(), "the worker has already exited"
        self._kill(code)

    def _kill(self, code: int) -> None:
        assert self.server is not None and self.exited is not None
        self.exit_code = code
        for listener in getattr(self.server, "servers", []):
            listener.close()
        for connection in list(self.server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        self.exited.cancel()

    async def stop(self) -> None:
        """Shut the server down gracefully (what SIGTERM does to a worker), kill it after the grace period;
        frees the socket."""
        if self.running and not self.stopping and self.farm is not None:
            self.farm.stopped.append(self.spec.name)
        self.stopping = True
        if self.server is not None and self.exited is not None and not self.exited.done():
            self.server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), STOP_GRACE_S)
            except asyncio.TimeoutError:
                log.warning("worker for %s did not stop in %ss; killing it", self.spec.name, STOP_GRACE_S)
                self._kill(KILLED)
                await self.exited
        self.socket_path.unlink(missing_ok=True)

    def rss(self) -> int | None:
        return None  # the test process's memory says nothing about one worker


class WorkerFarm:
    """The Scheduler's `start_worker`: makes InProcessWorkers, remembers them, and fails loads on demand."""

    def __init__(self) -> None:
        self.workers: list[InProcessWorker] = []
        self.stopped: list[str] = []  # models whose running workers were stopped, in order
        self.load_delay: dict[str, float] = {}  # model -> seconds each load of it takes
        self._failures: dict[str, list[str]] = {}

    def __call__(self, spec: ModelSpec, socket_path: Path) -> InProcessWorker:
        worker = InProcessWorker(spec, socket_path, self)
        self.workers.append(worker)
        return worker

    def fail_next_load(self, model: str, message: str = "injected load failure", times: int = 1) -> None:
        """The next `times` starts of `model` raise WorkerError carrying `message`."""
        self._failures.setdefault(model, []).extend([message] * times)

    async def before_load(self, worker: InProcessWorker) -> None:
        name = worker.spec.name
        delay = self.load_delay.get(name)
        if delay:
            await asyncio.sleep(delay)
        pending = self._failures.get(name)
        if pending:
            raise WorkerError(f"The model '{name}' failed to load: {pending.pop(0)}")

    def of(self, model: str) -> list[InProcessWorker]:
        """Every worker made for `model`, oldest first."""
        return [w for w in self.workers if w.spec.name == model]

    def live(self, model: str) -> InProcessWorker:
        """The one running worker of `model`."""
        running = [w for w in self.of(model) if w.running]
        assert len(running) == 1, f"expected one running worker of {model}, found {running}"
        return running[0]

    def running(self) -> set[str]:
        """Names of the models with a running worker."""
        return {w.spec.name for w in self.workers if w.running}
