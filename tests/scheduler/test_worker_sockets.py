"""Worker sockets a killed server left behind are removed when the next server starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runtime.scheduler.process import socket_dir


def test_sockets_of_servers_that_are_gone_are_removed(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    directory = socket_dir(tmp_path / "state")
    stale = [directory / f"w{gone.stdout.strip()}-1.sock", directory / f"w{gone.stdout.strip()}-1.json"]
    ours = [directory / f"w{os.getpid()}-1.sock", directory / f"w{os.getpid()}-1.json", directory / "other.txt"]
    for path in stale + ours:
        path.write_text("")
    assert socket_dir(tmp_path / "state") == directory
    assert [path.exists() for path in stale + ours] == [False, False, True, True, True]


def test_worker_output_with_a_huge_line_is_relayed_to_the_end(tmp_path: Path, capfd) -> None:
    """A line past asyncio's 64 KiB line limit used to end the relay (and then block the worker on a full pipe)."""
    import asyncio

    from runtime.http.logs import MAX_LOG_CHARS
    from runtime.scheduler.process import WorkerProcess
    from runtime.spec import ModelSpec

    async def relay() -> WorkerProcess:
        worker = WorkerProcess(ModelSpec("m", "llm", "fake", {"model": tmp_path}), tmp_path / "w.sock")
        script = "import sys; sys.stdout.write('x' * 1_000_000 + '\\n' + 'y' * 300_000); print('\\nerror: boom')"
        worker.process = await asyncio.create_subprocess_exec(sys.executable, "-c", script,
                                                              stdout=asyncio.subprocess.PIPE)
        await asyncio.wait_for(worker._relay_output(), 30)
        await worker.process.wait()
        return worker

    worker = asyncio.run(relay())
    assert worker._load_failure() == "The model 'm' failed to load: boom"
    relayed = capfd.readouterr().err.splitlines()
    assert relayed[-1] == "[worker m] error: boom"
    assert max(len(line) for line in relayed) < MAX_LOG_CHARS + 100
