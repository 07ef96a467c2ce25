"""Private data (the database, keys, the server log, generated images) is 0600 in 0700 directories, for a
new install and, once stacklet starts, for one made before."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from serverproc import free_port

from runtime.config import Paths, Settings
from runtime.http.files import ImageFiles
from runtime.store.keys import admin_key
from runtime.store.store import Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def folders(paths: Paths) -> list[Path]:
    assert paths.home is not None
    return [paths.home, paths.cache, paths.data, paths.config, paths.state, paths.logs, paths.models, paths.images]


def test_a_new_install_is_private(stacklet_home: Path) -> None:
    paths = Settings.load().paths
    store = Store(paths)
    admin_key(paths)  # writes to the database (WAL) and the CLI's key file
    assert {p.name: mode(p) for p in folders(paths)} == {p.name: 0o700 for p in folders(paths)}
    written = [paths.database, paths.data / "admin.key", *paths.data.glob("stacklet.db-*")]
    assert len(written) == 4  # the database, its -wal and -shm, the key
    assert {p.name: mode(p) for p in written} == {p.name: 0o600 for p in written}
    store.close()


def test_an_older_install_is_tightened_on_start(stacklet_home: Path) -> None:
    paths = Settings.load().paths
    for folder in folders(paths):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
    older = sqlite3.connect(paths.database)  # open while stacklet starts: its -wal and -shm stay
    older.execute("PRAGMA journal_mode=WAL")
    older.execute("CREATE TABLE t (x)")
    older.commit()
    database = [paths.database, *paths.data.glob("stacklet.db-*")]
    for path in database:
        path.chmod(0o644)
    Store(paths).close()
    assert [mode(p) for p in folders(paths)] == [0o700] * len(folders(paths))
    assert len(database) == 3 and [mode(p) for p in database] == [0o600] * 3
    older.close()


def test_generated_images_are_private(stacklet_home: Path) -> None:
    paths = Settings.load().paths
    images = ImageFiles(paths.images, ttl=60)
    name = images.save(b"\x89PNG fake", "png")
    assert mode(paths.images / name) == 0o600
    assert mode(paths.images) == 0o700


def test_the_background_server_log_is_private(stacklet_home: Path) -> None:
    env = {**os.environ, "STACKLET_HOME": str(stacklet_home)}
    log = Settings.load().paths.logs / "server.log"
    log.parent.mkdir(parents=True)
    log.write_text("from an older install\n")
    log.chmod(0o644)
    started = subprocess.run([sys.executable, "-m", "cli", "serve", "-d", "--port", str(free_port())], env=env,
                             capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        assert mode(log) == 0o600 and mode(log.parent) == 0o700
        assert log.read_text().startswith("from an older install\n")
    finally:
        subprocess.run([sys.executable, "-m", "cli", "stop"], env=env, capture_output=True, timeout=120)
