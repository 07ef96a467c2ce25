"""Real `python -m runtime` server processes for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from runtime.config import Settings
from runtime.store.keys import KeyStore
from runtime.store.registry import ModelFile, ModelRecord, Registry


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def local_record(name: str, kind: str, files: dict[str, Path], **fields) -> ModelRecord:
    """A registry entry for model files that stay where they are (no copy into the store)."""
    model_files = [ModelFile(role, str(path), path.stat().st_size) for role, path in files.items()]
    return ModelRecord(name=name, kind=kind, source={"type": "local"}, files=model_files, **fields)


def wait_healthy(root: str, process: subprocess.Popen[bytes], attempts: int = 300) -> None:
    """Until /health answers 200 (llama-server answers 503 while it loads), 0.1 s apart."""
    for _ in range(attempts):
        assert process.poll() is None, "server exited during start-up"
        try:
            if httpx.get(f"{root}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy")


@contextmanager
def server_process(home: Path, records: Iterable[ModelRecord] = ()) -> Iterator[tuple[str, str]]:
    """(root URL, API key) of a server on a free port, with `records` registered in `home`.
    On exit it checks that the key never reached the server's log."""
    env = {**os.environ, "STACKLET_HOME": str(home)}
    paths = Settings.load(environ=env).paths
    registry = Registry(paths)
    for record in records:
        registry.add(record)
    registry.close()
    key, _ = KeyStore(paths).create("e2e", scope="admin")
    port = free_port()
    log_path = home / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "runtime", "--port", str(port)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        root = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(root, process)
            yield root, key
        finally:
            process.terminate()
            process.wait(timeout=60)
    assert key not in log_path.read_text()  # keys never reach the log


@contextmanager
def llama_server_process(binary: str, model: Path, *, threads: int, parallel: int, ctx_size: int,
                         gpu_layers: str | None = None) -> Iterator[str]:
    """Root URL of llama.cpp's own llama-server (for benchmarks), loaded the way stacklet loads the model:
    `gpu_layers` is stacklet's n_gpu_layers (a count or "all"; None leaves llama-server's default)."""
    import llama_cpp.llama_cpp as ll

    from runtime.engines.llama.batch import amx_kernels

    ll.llama_backend_init()
    port = free_port()
    command = [binary, "-m", str(model), "--port", str(port), "-t", str(threads), "-np", str(parallel),
               "-c", str(ctx_size)]
    if amx_kernels():  # what stacklet does on such CPUs (batch.py); llama-server crashes otherwise
        command.append("--no-repack")
    if gpu_layers is not None:
        command += ["-ngl", "999" if gpu_layers == "all" else gpu_layers]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(root, process, attempts=600)
        yield root
    finally:
        process.kill()
        process.wait()
