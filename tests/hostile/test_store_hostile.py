"""Hostile input to the model store: a hub (or HF_ENDPOINT mirror) that lies, revisions and pull requests
built to escape or break, corrupt model files, and a disk that fills up at each place the store writes.

Every case asserts its clear error, that nothing is left in the store (every file and folder walked), and
for the API cases that the server still answers afterwards.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hubserver import FakeHub, store_contents, tiny_gguf
from serverproc import server_process

from runtime.config import Settings
from runtime.errors import (
    HubResponseError,
    InsufficientStorageError,
    InvalidRequestError,
    RepoNotFoundError,
    StoreError,
)
from runtime.store import layout
from runtime.store.store import Store

GGUF = tiny_gguf()
WAIT_S = 60  # an upper bound for "eventually", never a timing assertion


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store(Settings.load().paths)
    yield opened
    opened.close()


def assert_nothing_left(store: Store) -> None:
    """No model registered, nothing in the store, nothing named evil anywhere around it."""
    assert store.list() == []
    assert store_contents(store.paths.models) == []
    assert store.paths.home is not None
    assert [p for p in store.paths.home.parent.rglob("*") if "evil" in p.name] == []


def assert_one_line(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    assert len(message) < 400


# --- a hub that lies ---------------------------------------------------------------------------------------

def sibling(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def rewrite(info: dict[str, Any]) -> dict[str, Any]:
        first = {**info["siblings"][0], **changes}
        return {**info, "siblings": [{k: v for k, v in first.items() if v is not DROP}]}
    return rewrite


def lfs(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def rewrite(info: dict[str, Any]) -> dict[str, Any]:
        first = info["siblings"][0]
        changed = {k: v for k, v in {**first["lfs"], **changes}.items() if v is not DROP}
        return {**info, "siblings": [{**first, "lfs": changed}]}
    return rewrite


def info(**changes: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda original: {**original, **changes}


DROP = object()
HOSTILE_INFO: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "name-climbs-out": (sibling(rfilename="../../x/evil-Q4_K_M.gguf"), "'../../x/evil-Q4_K_M.gguf'"),
    "name-climbs-out-deep": (sibling(rfilename="a/../../../../evil-Q4_K_M.gguf"), "../../../../evil"),
    "name-absolute": (sibling(rfilename="/tmp/evil-Q4_K_M.gguf"), "'/tmp/evil-Q4_K_M.gguf'"),
    "name-dot-part": (sibling(rfilename="a/./evil-Q4_K_M.gguf"), "'a/./evil-Q4_K_M.gguf'"),
    "name-only-dots": (sibling(rfilename=".."), "'..'"),
    "name-backslashes": (sibling(rfilename="..\\..\\evil-Q4_K_M.gguf"), "evil-Q4_K_M.gguf"),
    "name-nul": (sibling(rfilename="evil\x00-Q4_K_M.gguf"), "\\x00"),
    "name-newline": (sibling(rfilename="evil\n-Q4_K_M.gguf"), "\\n"),
    "name-lone-surrogate": (sibling(rfilename="evil\udcff-Q4_K_M.gguf"), "\\udcff"),
    "name-empty": (sibling(rfilename=""), "''"),
    "name-empty-part": (sibling(rfilename="a//evil-Q4_K_M.gguf"), "'a//evil-Q4_K_M.gguf'"),
    "name-trailing-slash": (sibling(rfilename="evil/"), "'evil/'"),
    "name-5000-chars": (sibling(rfilename="e" * 5000 + "-Q4_K_M.gguf"), "'eeee"),
    "name-not-a-string": (sibling(rfilename=5), ": 5."),
    "name-missing": (sibling(rfilename=DROP), "repo info"),
    "commit-climbs-out": (info(sha="../../x"), "'../../x'"),
    "commit-short": (info(sha="abc123"), "'abc123'"),
    "commit-uppercase": (info(sha="A" * 40), "'AAAA"),
    "commit-41-digits": (info(sha="a" * 41), "'aaaa"),
    "commit-missing": (info(sha=None), "None"),
    "commit-not-a-string": (info(sha=12345), "12345"),
    "sha256-climbs-out": (lfs(sha256="../../../etc/passwd"), "'../../../etc/passwd'"),
    "sha256-short": (lfs(sha256="abc"), "'abc'"),
    "sha256-missing": (lfs(sha256=DROP), "repo info"),
    "blob-id-climbs-out": (sibling(blobId="../x", lfs=None), "'../x'"),
    "size-negative": (lfs(size=-1), "-1"),
    "size-2^60": (lfs(size=1 << 60), str(1 << 60)),
    "size-a-string": (lfs(size="12"), "'12'"),
    "siblings-a-string": (info(siblings="evil"), "repo info"),
    "info-a-list": (lambda _: [1, 2], "repo info"),
}


@pytest.mark.parametrize("case", HOSTILE_INFO)
def test_hostile_repo_info_is_refused_and_nothing_is_stored(case: str, hub: FakeHub, store: Store) -> None:
    rewrite, shown = HOSTILE_INFO[case]
    hub.add_repo("org/Evil-GGUF", {"evil-Q4_K_M.gguf": GGUF}).rewrite_info = rewrite
    with pytest.raises(HubResponseError) as caught:
        store.pull("org/Evil-GGUF")
    assert caught.value.status == 502
    assert shown in caught.value.message and "Nothing was stored" in caught.value.message
    assert_one_line(caught.value.message)
    assert_nothing_left(store)
    assert hub.requests("GET", "/cdn/") == []


def without_hashes(info: dict[str, Any]) -> dict[str, Any]:
    """A listing with no sha256 and no blob id: the blob would be named by the ETag alone."""
    return {**info, "siblings": [{"rfilename": s["rfilename"], "size": s["size"]} for s in info["siblings"]]}


HOSTILE_DOWNLOADS: dict[str, tuple[dict[str, str], Callable[[dict[str, Any]], Any] | None, str]] = {
    "etag-climbs-out": ({"X-Linked-Etag": '"../../x"'}, without_hashes, "ETag"),
    "etag-absolute": ({"X-Linked-Etag": '"/etc/evil"'}, without_hashes, "ETag"),
    "size-differs-from-listing": ({"X-Linked-Size": "999999999"}, None, "999999999"),
}


@pytest.mark.parametrize("case", HOSTILE_DOWNLOADS)
def test_hostile_download_headers_are_refused(case: str, hub: FakeHub, store: Store) -> None:
    headers, rewrite, shown = HOSTILE_DOWNLOADS[case]
    repo = hub.add_repo("org/Evil-GGUF", {"evil-Q4_K_M.gguf": GGUF})
    repo.head_headers, repo.rewrite_info = headers, rewrite
    with pytest.raises(HubResponseError) as caught:
        store.pull("org/Evil-GGUF")
    assert shown in caught.value.message
    assert_one_line(caught.value.message)
    assert_nothing_left(store)


def test_a_hub_that_sends_more_than_it_announced_is_cut_off(hub: FakeHub, store: Store) -> None:
    hub.add_repo("org/Evil-GGUF", {"evil-Q4_K_M.gguf": GGUF})
    hub.state.padding[hashlib.sha256(GGUF).hexdigest()] = 50_000_000  # would fill the disk if it never ended
    with pytest.raises(HubResponseError, match=f"more than the {len(GGUF)} bytes it announced"):
        store.pull("org/Evil-GGUF")
    assert_nothing_left(store)


def test_a_corrupt_gguf_from_the_hub_is_not_registered_nor_kept(hub: FakeHub, store: Store) -> None:
    hub.add_repo("org/Evil-GGUF", {"evil-Q4_K_M.gguf": CORRUPT_GGUF["tensor-count-2^40"]})
    with pytest.raises(StoreError, match="tensor count 1099511627776"):
        store.pull("org/Evil-GGUF")
    assert_nothing_left(store)


# --- revisions and pull requests --------------------------------------------------------------------------

BAD_REVISIONS = ["../../x", "..", "a/../../b", "/etc", "refs//x", "v1..v2", "-rf", ".hidden", "main/",
                 "ma\x00in", "ma\nin", "ma\ud800in", "x" * 300, "", "ma in"]
GOOD_REVISIONS = ["v1.0", "refs/pr/1", "release-2024_01+b", "a" * 40]


@pytest.mark.parametrize("revision", BAD_REVISIONS, ids=[ascii(r)[:30] for r in BAD_REVISIONS])
def test_a_bad_revision_is_refused_before_the_hub_is_asked(revision: str, hub: FakeHub, store: Store) -> None:
    hub.add_repo("org/Tiny-GGUF", {"tiny-Q4_K_M.gguf": GGUF})
    with pytest.raises(InvalidRequestError) as caught:
        store.pull("org/Tiny-GGUF", revision=revision)
    assert caught.value.param == "revision" and caught.value.status == 400
    assert repr(revision[:64]) in caught.value.message
    assert_one_line(caught.value.message)
    assert hub.state.log == []
    assert_nothing_left(store)
    assert not (store.paths.home.parent / "x").exists()  # type: ignore[union-attr]


@pytest.mark.parametrize("revision", GOOD_REVISIONS)
def test_real_revisions_reach_the_hub(revision: str, hub: FakeHub, store: Store) -> None:
    hub.add_repo("org/Tiny-GGUF", {"tiny-Q4_K_M.gguf": GGUF})
    with pytest.raises(RepoNotFoundError, match=re.escape(f"Revision '{revision}' not found")):  # only main here
        store.pull("org/Tiny-GGUF", revision=revision)
    assert [path for _, path, _ in hub.state.log] == [f"/api/models/org/Tiny-GGUF/revision/{revision}"]
    assert_nothing_left(store)


def test_the_cli_refuses_a_bad_revision_in_one_line(hub: FakeHub) -> None:
    result = subprocess.run([sys.executable, "-m", "cli", "pull", "org/Tiny-GGUF", "--revision", "../../x"],
                            capture_output=True, text=True, timeout=WAIT_S, env=os.environ.copy())
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Invalid revision '../../x': give a branch, tag or commit of the repo (letters, digits and "
        ". _ + - in parts separated by /, without '..')."
    ]


# --- corrupt model files ----------------------------------------------------------------------------------

def gguf_with(body: bytes) -> bytes:
    return b"GGUF" + body


def nested_arrays(depth: int) -> bytes:
    kv = struct.pack("<Q", 1) + b"x" + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * depth
    return gguf_with(struct.pack("<IQQ", 3, 0, 1) + kv + struct.pack("<IQ", 4, 0))


def flipped(offset: int) -> bytes:
    data = bytearray(GGUF)
    data[offset] ^= 0xFF
    return bytes(data)


CORRUPT_GGUF: dict[str, bytes] = {
    "tensor-count-2^40": GGUF[:8] + struct.pack("<Q", 1 << 40) + GGUF[16:] + b"\0" * 100_000,
    "kv-count-2^40": GGUF[:16] + struct.pack("<Q", 1 << 40) + GGUF[24:],
    "arrays-nested-5000": nested_arrays(5000),
    "arrays-nested-5": nested_arrays(5),
    "array-of-2^60-items": gguf_with(struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"x"
                                     + struct.pack("<IIQ", 9, 0, 1 << 60)),
    "string-length-2^62": GGUF[:24] + struct.pack("<Q", 1 << 62) + GGUF[32:],
    "string-length-flipped": flipped(31),
    "magic-flipped": flipped(0),
    "version-flipped": flipped(7),
    "value-type-flipped": flipped(52),
    "key-not-utf8": flipped(32),
    "truncated-header": GGUF[: len(GGUF) // 3],
    "only-magic": b"GGUF",
    "empty": b"",
    "tensor-with-1000-dims": gguf_with(struct.pack("<IQQ", 3, 1, 0) + struct.pack("<Q", 1) + b"t"
                                       + struct.pack("<I", 1000) + b"\0" * 8000),
}


@pytest.mark.parametrize("case", CORRUPT_GGUF)
def test_a_corrupt_gguf_import_is_one_error_and_leaves_nothing(case: str, store: Store, tmp_path: Path) -> None:
    source = tmp_path / "damaged-Q4_K_M.gguf"
    source.write_bytes(CORRUPT_GGUF[case])
    with pytest.raises(StoreError, match="is not a usable GGUF file") as caught:
        store.pull(str(source))
    assert_one_line(caught.value.message)
    assert_nothing_left(store)
    assert source.read_bytes() == CORRUPT_GGUF[case]


@pytest.mark.parametrize("case", ["tensor-count-2^40", "arrays-nested-5000", "string-length-flipped",
                                  "truncated-header"])
def test_the_cli_reports_a_corrupt_gguf_in_one_line(case: str, store: Store, tmp_path: Path) -> None:
    source = tmp_path / "damaged.gguf"
    source.write_bytes(CORRUPT_GGUF[case])
    result = subprocess.run([sys.executable, "-m", "cli", "pull", str(source)], capture_output=True, text=True,
                            timeout=WAIT_S, env=os.environ.copy())
    assert result.returncode == 8
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: damaged.gguf is not a usable GGUF file: ")
    assert_nothing_left(store)


def safetensors(header: bytes, size: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if size is None else size) + header


CORRUPT_FILES: dict[str, tuple[dict[str, bytes], str]] = {
    "safetensors-header-2^62": ({"m.safetensors": safetensors(b"{}", 1 << 62)}, "not a valid safetensors file"),
    "safetensors-nested-100000": ({"m.safetensors": safetensors(b"[" * 100_000 + b"]" * 100_000)},
                                  "not a valid safetensors file"),
    "safetensors-header-a-list": ({"m.safetensors": safetensors(b"[1, 2]")}, "not a valid safetensors file"),
    "piper-config-nested": ({"v.onnx": b"onnx", "v.onnx.json": b"[" * 100_000 + b"]" * 100_000},
                            "not valid JSON"),
    "piper-config-not-utf8": ({"v.onnx": b"onnx", "v.onnx.json": b"\xff\xfe{}"}, "not UTF-8"),
    "whisper-vocabulary-nested": ({"model.bin": b"w", "config.json": b"{}",
                                   "vocabulary.json": b"[" * 100_000 + b"]" * 100_000}, "not valid JSON"),
}


@pytest.mark.parametrize("case", CORRUPT_FILES)
def test_corrupt_companion_files_are_one_error(case: str, store: Store, tmp_path: Path) -> None:
    files, message = CORRUPT_FILES[case]
    folder = tmp_path / "model"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with pytest.raises(StoreError, match=message) as caught:
        store.pull(str(folder), name="m")
    assert_one_line(caught.value.message)
    assert_nothing_left(store)


def test_odd_metadata_types_are_left_out(store: Store, tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "odd-Q4_K_M.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("llama.context_length", "a lot")
    writer.add_float32("llama.embedding_length", float("nan"))
    writer.add_uint32("llama.attention.head_count", 0)
    writer.add_uint32("tokenizer.chat_template", 7)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    meta = store.pull(str(path)).metadata
    assert (meta["context_length"], meta["embedding_length"], meta["head_count"]) == (None, None, 0)
    assert (meta["chat_template"], meta["has_chat_template"]) == (None, False)
    json.dumps(meta, allow_nan=False)  # the API can always send it


# --- a full disk at every place the store writes ----------------------------------------------------------

def disk_full(*_: Any, **__: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


class FullAfter:
    """A file object that runs out of disk after `room` bytes, as a write(2) on a full disk does."""

    def __init__(self, raw: Any, room: int) -> None:
        self.raw, self.room = raw, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.raw.write(data[: self.room])
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.raw.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def __enter__(self) -> FullAfter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()


def full_partials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads (blobs/*.incomplete) hit a full disk 100 KB in."""
    real_open = pathlib.Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, mode, *args, **kwargs)
        return FullAfter(handle, 100_000) if self.name.endswith(".incomplete") and "a" in mode else handle
    monkeypatch.setattr(pathlib.Path, "open", open_)


def full_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports cannot hard-link (another filesystem) and the copy fills the disk halfway."""
    def copy(source: str, target: str, **_: Any) -> None:
        with open(target, "wb") as out:
            out.write(Path(source).read_bytes()[:1000])
        disk_full()
    monkeypatch.setattr(os, "link", lambda *_: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    monkeypatch.setattr(layout.shutil, "copyfile", copy)


def full_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot symlink finds no free inode."""
    monkeypatch.setattr(pathlib.Path, "symlink_to", disk_full)


def no_free_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk has 10 bytes left before the download starts."""
    monkeypatch.setattr(shutil, "disk_usage", lambda _: SimpleNamespace(total=1 << 40, used=1 << 40, free=10))


def full_database(store: Store) -> None:
    """The database file cannot grow (SQLite's own "database or disk is full")."""
    pages = store.registry._conn.execute("PRAGMA page_count").fetchone()[0]
    store.registry._conn.execute(f"PRAGMA max_page_count = {pages}")


BIG_TEMPLATE_GGUF = tiny_gguf(template="{{ messages }}" + "x" * 50_000)  # a row that needs new pages
HUB_SEAMS = {"download-write": full_partials, "download-free-space": no_free_space, "snapshot-link": full_links}
LOCAL_SEAMS = {"import-copy": full_copies, "snapshot-link": full_links}


@pytest.mark.parametrize("seam", [*HUB_SEAMS, "registry-insert"])
def test_a_full_disk_during_a_hub_pull(seam: str, hub: FakeHub, store: Store) -> None:
    hub.add_repo("org/Big-GGUF", {"big-Q4_K_M.gguf": BIG_TEMPLATE_GGUF + os.urandom(300_000)})
    with pytest.MonkeyPatch.context() as patch, pytest.raises(InsufficientStorageError) as caught:
        full_database(store) if seam == "registry-insert" else HUB_SEAMS[seam](patch)
        store.pull("org/Big-GGUF")
    assert caught.value.status == 507 and caught.value.exit_code == 8
    assert "Free some space" in caught.value.message
    assert_one_line(caught.value.message)
    assert_nothing_left(store)  # the partial too: it holds the space the user has to free


@pytest.mark.parametrize("seam", [*LOCAL_SEAMS, "registry-insert"])
def test_a_full_disk_during_an_import(seam: str, store: Store, tmp_path: Path) -> None:
    source = tmp_path / "big-Q4_K_M.gguf"
    source.write_bytes(BIG_TEMPLATE_GGUF)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(InsufficientStorageError) as caught:
        full_database(store) if seam == "registry-insert" else LOCAL_SEAMS[seam](patch)
        store.pull(str(source))
    assert "Free some space" in caught.value.message
    assert_one_line(caught.value.message)
    assert_nothing_left(store)
    assert source.read_bytes() == BIG_TEMPLATE_GGUF


INJECTED_CLI = """
import errno, os, sys
import runtime.store.layout as layout
def copy(source, target, **_):
    open(target, "wb").write(b"x" * 1000)
    raise OSError(errno.ENOSPC, "No space left on device")
def link(*_):
    raise OSError(errno.EXDEV, "cross-device")
os.link, layout.shutil.copyfile = link, copy
sys.argv = ["stacklet", "pull", sys.argv[1]]
from cli.app import main
main()
"""


def test_the_cli_reports_a_full_disk_in_one_line(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "big-Q4_K_M.gguf"
    source.write_bytes(BIG_TEMPLATE_GGUF)
    result = subprocess.run([sys.executable, "-c", INJECTED_CLI, str(source)], capture_output=True, text=True,
                            timeout=WAIT_S, env=os.environ.copy())
    assert result.returncode == 8
    assert result.stderr.strip().splitlines() == [
        "error: The disk is full: the model did not fit in the store. Free some space, then pull again."
    ]
    assert_nothing_left(store)


class FullDisk:
    """A connection whose writes meet a full disk; reads pass through."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_keys_on_a_full_disk() -> None:
    from runtime.store.keys import KeyStore

    keys = KeyStore(Settings.load().paths)
    key, _ = keys.create("before")
    keys._conn = FullDisk(keys._conn)  # type: ignore[assignment]
    for write in (lambda: keys.create("after"), lambda: keys.revoke("before")):
        with pytest.raises(InsufficientStorageError) as caught:
            write()
        assert caught.value.status == 507 and "Free some space" in caught.value.message
    assert keys.verify(key) is not None  # the key still works; its last use goes unrecorded
    keys._conn = keys._conn.conn
    assert [k.name for k in keys.list()] == ["before"]
    keys.close()


class NoScheduler:
    async def start(self) -> None: ...
    async def shutdown(self) -> None: ...
    async def unload(self, model: str) -> bool:
        return False

    def status(self) -> list[dict[str, Any]]:
        return []


def test_patch_on_a_full_disk_is_a_507_and_changes_nothing(store: Store, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from runtime.server.app import create_app
    from runtime.store.keys import KeyStore

    source = tmp_path / "tiny-Q4_K_M.gguf"
    source.write_bytes(GGUF)
    store.pull(str(source), name="tiny")
    settings = replace(Settings.load(), allowed_hosts=("testserver",))
    key, _ = KeyStore(settings.paths).create("patch", scope="admin")
    store.registry._conn = FullDisk(store.registry._conn)  # type: ignore[assignment]
    app = create_app(settings, scheduler=NoScheduler(), registry=store.registry)
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        response = client.patch("/v1/models/tiny", json={"ctx_size": 1024})
        assert response.status_code == 507
        assert response.json() == {"error": {
            "message": "The disk is full: the database could not be written, nothing was changed. Free some "
                       "space, then try again.",
            "type": "server_error", "param": None, "code": "insufficient_storage"}}
        again = client.get("/v1/models/tiny")
        assert again.status_code == 200 and again.json()["options"] == {}
        assert client.get("/health").status_code == 200


# --- the same over the management API of a real server ---------------------------------------------------

@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], FakeHub, Path]]:
    """A real server pulling from a hub that lies: (root URL, auth headers, hub, the server's store)."""
    home = tmp_path_factory.mktemp("api") / "home"
    with FakeHub() as hub, pytest.MonkeyPatch.context() as env:
        env.setenv("HF_ENDPOINT", hub.url)
        env.setenv("STACKLET_HOME", str(home))
        with server_process(home) as (root, key):
            yield root, {"Authorization": f"Bearer {key}"}, hub, Settings.load().paths.models


def post_pull(api: tuple[str, dict[str, str], FakeHub, Path], body: bytes) -> httpx.Response:
    root, headers, _, _ = api
    return httpx.post(f"{root}/v1/models", content=body, headers={**headers, "Content-Type": "application/json"},
                      timeout=WAIT_S)


def last_event(response: httpx.Response) -> dict[str, Any]:
    data = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return json.loads(data[-2])


def assert_server_answers(api: tuple[str, dict[str, str], FakeHub, Path], repo: str = "") -> None:
    root, headers, _, models = api
    assert httpx.get(f"{root}/health", timeout=WAIT_S).status_code == 200
    listed = httpx.get(f"{root}/v1/models", headers=headers, timeout=WAIT_S)
    assert listed.status_code == 200 and listed.json()["data"] == []
    if repo:
        assert [p for p in store_contents(models) if repo in p] == []


@pytest.mark.parametrize("case", HOSTILE_INFO)
def test_hostile_repo_info_over_the_api(case: str, api: tuple[str, dict[str, str], FakeHub, Path]) -> None:
    repo = f"org/Evil{list(HOSTILE_INFO).index(case)}-GGUF"
    api[2].add_repo(repo, {"evil-Q4_K_M.gguf": GGUF}).rewrite_info = HOSTILE_INFO[case][0]
    response = post_pull(api, json.dumps({"source": repo}).encode())
    assert response.status_code == 200  # the stream had started: the error is its last event
    error = last_event(response)["error"]
    assert (error["type"], error["code"]) == ("server_error", "bad_hub_response")
    assert HOSTILE_INFO[case][1] in error["message"]
    assert_server_answers(api, repo.replace("/", "--"))


INVALID_PULLS: dict[str, tuple[bytes, str]] = {
    "empty-source": (b'{"source": ""}', "source"),
    "blank-source": (b'{"source": "   "}', "source"),
    "lone-surrogate-source": (b'{"source": "a\\ud800b"}', "source"),
    "nul-in-source": (b'{"source": "org/x\\u0000"}', "source"),
    "5000-char-source": (json.dumps({"source": "o/" + "r" * 5000}).encode(), "source"),
    "unknown-kind": (b'{"source": "org/x", "kind": "video"}', "kind"),
    "lone-surrogate-kind": (b'{"source": "org/x", "kind": "\\udfff"}', "kind"),
    "revision-climbs-out": (b'{"source": "org/x", "revision": "../../x"}', "revision"),
    "revision-lone-surrogate": (b'{"source": "org/x", "revision": "m\\ud800"}', "revision"),
    "revision-absolute": (b'{"source": "org/x", "revision": "/etc"}', "revision"),
    "empty-file-pattern": (b'{"source": "org/x", "files": ["*.gguf", ""]}', "files[1]"),
    "lone-surrogate-file-pattern": (b'{"source": "org/x", "files": ["a\\ud800"]}', "files[0]"),
    "control-char-file-pattern": (b'{"source": "org/x", "files": ["a\\u0007"]}', "files[0]"),
}


@pytest.mark.parametrize("case", INVALID_PULLS)
def test_an_invalid_pull_is_a_400_before_the_stream(case: str, api: tuple[str, dict[str, str], FakeHub, Path]) -> None:
    body, param = INVALID_PULLS[case]
    before = len(api[2].state.log)
    response = post_pull(api, body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert_one_line(error["message"])
    assert len(api[2].state.log) == before  # the hub was never asked
    assert_server_answers(api)


def test_a_corrupt_gguf_over_the_api(api: tuple[str, dict[str, str], FakeHub, Path]) -> None:
    api[2].add_repo("org/Damaged-GGUF", {"damaged-Q4_K_M.gguf": CORRUPT_GGUF["arrays-nested-5000"]})
    error = last_event(post_pull(api, b'{"source": "org/Damaged-GGUF"}'))["error"]
    assert "arrays are nested more than 4 deep" in error["message"]
    assert_server_answers(api, "Damaged-GGUF")
