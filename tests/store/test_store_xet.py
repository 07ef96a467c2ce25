"""Xet-stored files, as the real hub now serves every large GGUF: the hub's answers carry X-Xet-Hash, a CAS
token route and a signed Location on the Xet bridge (tests/hubserver.py; huggingface_hub's own parser reads
them as Xet metadata). stacklet takes the bridge's plain HTTP bytes, so resume, progress and sha256 work as
for any file, and hf_xet is never imported. Not covered: hf_xet's own CAS protocol (xorbs, reconstruction),
which stacklet does not use."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import FakeHub, store_contents, tiny_gguf

from runtime.config import Settings
from runtime.errors import ChecksumMismatchError, PullCancelledError
from runtime.store.store import STALE_PARTIAL_S, Store

CHUNK = 10 * 1024 * 1024
DATA = tiny_gguf(extra=os.urandom(CHUNK + 3_000_000))
SHA = hashlib.sha256(DATA).hexdigest()
FILE = "xet-Q4_K_M.gguf"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    monkeypatch.setitem(sys.modules, "hf_xet", None)  # any use of hf_xet would fail the pull
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        server.add_repo("org/Xet-GGUF", {FILE: DATA, "README.md": b"# xet\n"}).xet = True
        yield server


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store(Settings.load().paths)
    yield opened
    opened.close()


def bridge_ranges(hub: FakeHub) -> list[str | None]:
    return [r for _, _, r in hub.requests("GET", "/xet-bridge/")]


def test_the_hub_answers_are_xet_shaped(hub: FakeHub) -> None:
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import get_hf_file_metadata

    meta = get_hf_file_metadata(hf_hub_url("org/Xet-GGUF", FILE, endpoint=hub.url), endpoint=hub.url)
    assert meta.xet_file_data is not None and len(meta.xet_file_data.file_hash) == 64
    assert "/xet-bridge/" in meta.location and meta.size == len(DATA)


def test_a_xet_file_pulls_through_the_bridge_with_real_byte_counts(hub: FakeHub, store: Store) -> None:
    events: list[dict] = []
    record = store.pull("org/Xet-GGUF", progress=events.append)
    assert record.files[0].sha256 == SHA
    assert (store.paths.models / record.files[0].path).read_bytes() == DATA
    assert bridge_ranges(hub) == [None]
    progress = [e["bytes"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == len(DATA)
    assert [e["sha256"] for e in events if e["event"] == "verified"] == [SHA]


def test_a_dropped_bridge_connection_resumes(hub: FakeHub, store: Store) -> None:
    hub.state.drop_once[SHA] = CHUNK + 1_000_000
    store.pull("org/Xet-GGUF")
    assert bridge_ranges(hub) == [None, f"bytes={CHUNK + 1_000_000}-"]


def test_an_expired_bridge_url_is_renewed_and_the_download_goes_on(hub: FakeHub, store: Store) -> None:
    hub.state.drop_once[SHA] = CHUNK
    hub.state.expire_after[SHA] = 1  # the URL works once, then it has expired
    record = store.pull("org/Xet-GGUF")
    assert (store.paths.models / record.files[0].path).read_bytes() == DATA
    assert bridge_ranges(hub) == [None, f"bytes={CHUNK}-", f"bytes={CHUNK}-"]  # refused, then on a fresh URL
    assert len(hub.requests("HEAD", f"/resolve/{hub.state.repos['org/Xet-GGUF'].commit}/{FILE}")) == 2


def test_a_stopped_pull_keeps_the_partial_and_the_rerun_resumes(hub: FakeHub, store: Store) -> None:
    hub.state.stall_after[SHA] = CHUNK
    cancel, outcome = threading.Event(), []

    def pull() -> None:
        try:
            store.pull("org/Xet-GGUF", cancelled=cancel.is_set)
        except PullCancelledError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=pull)
    thread.start()
    assert hub.state.stalled.wait(60)
    cancel.set()  # what Ctrl-C on `stacklet pull`, or a client leaving the server's pull, does
    thread.join(60)
    assert len(outcome) == 1 and "resume" in outcome[0].message
    partial = store.paths.models / "models--org--Xet-GGUF" / "blobs" / f"{SHA}.incomplete"
    kept = partial.stat().st_size
    assert 0 < kept <= CHUNK and store.list() == []
    store.pull("org/Xet-GGUF")
    assert bridge_ranges(hub)[-1] == f"bytes={kept}-"
    assert not partial.exists()


def test_a_bridge_that_ignores_the_range_says_the_download_starts_over(hub: FakeHub, store: Store) -> None:
    blobs = store.paths.models / "models--org--Xet-GGUF" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{SHA}.incomplete").write_bytes(DATA[:1000])
    hub.state.no_ranges.add(SHA)
    events: list[dict] = []
    record = store.pull("org/Xet-GGUF", progress=events.append)
    assert [e for e in events if e["event"] == "restarted"] == [{"event": "restarted", "file": FILE, "discarded": 1000}]
    assert (store.paths.models / record.files[0].path).read_bytes() == DATA


def test_a_corrupt_xet_file_is_never_registered_and_leaves_nothing(hub: FakeHub, store: Store) -> None:
    hub.state.corrupt.add(SHA)
    with pytest.raises(ChecksumMismatchError):
        store.pull("org/Xet-GGUF")
    assert store.list() == [] and store_contents(store.paths.models) == []


def test_partials_of_versions_the_repo_no_longer_lists_go(hub: FakeHub, store: Store) -> None:
    blobs = store.paths.models / "models--org--Xet-GGUF" / "blobs"
    blobs.mkdir(parents=True)
    old, fresh = blobs / f"{'a' * 64}.incomplete", blobs / f"{'b' * 64}.incomplete"
    for partial in (old, fresh):
        partial.write_bytes(b"part of an older version")
    hour_ago = time.time() - STALE_PARTIAL_S - 60
    os.utime(old, (hour_ago, hour_ago))
    store.pull("org/Xet-GGUF")
    assert not old.exists()
    assert fresh.exists()  # it may be another pull's, still writing
    assert [p.name for p in blobs.iterdir() if p.name.endswith(".incomplete")] == [fresh.name]


def test_hf_xet_stays_unimported(hub: FakeHub, store: Store) -> None:
    store.pull("org/Xet-GGUF")
    assert sys.modules.get("hf_xet") is None
    assert Path(store.paths.models).exists()
