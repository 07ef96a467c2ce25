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
