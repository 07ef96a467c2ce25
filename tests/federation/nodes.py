"""Helpers for the federation tests: stacklet nodes on loopback, the fault-injecting upstream, CLI calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from faultserver import FaultServer
from serverproc import server_process
from typer.testing import CliRunner

from runtime.store.registry import ModelRecord

CHECK_INTERVAL_S = 0.5  # the front node's active health checks, fast for the flapping test


@contextmanager
def node(home: Path, records: list[ModelRecord] = (), check_interval: float = CHECK_INTERVAL_S
         ) -> Iterator[tuple[str, str]]:
    """(root URL, admin key) of a stacklet server in `home`."""
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text(f"remote_check_interval = {check_interval}\n")
    with server_process(home, records) as running:
        yield running


@contextmanager
def fault_server() -> Iterator[tuple[str, FaultServer]]:
    """(root URL, app) of the fault-injecting upstream, on a uvicorn thread."""
    app = FaultServer()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """`stacklet ARGS` in-process against `home`; the result has exit_code, stdout and stderr."""
    from cli.app import app

    return CliRunner().invoke(app, list(args), env={"STACKLET_HOME": str(home), **(env or {})})


def wait_until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def admin(root: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=root, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def target_requests(metrics: str, target: str) -> int:
    prefix = f'stacklet_target_requests_total{{target="{target}"}} '
    return next((int(line[len(prefix):]) for line in metrics.splitlines() if line.startswith(prefix)), 0)
