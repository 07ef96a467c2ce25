"""Pulls from ModelScope's HTTP API (a local server speaking it, tests/hubserver.py) with real small GGUFs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import FakeHub, store_contents, tiny_gguf

from runtime.config import Settings
from runtime.errors import (
    ChecksumMismatchError,
    GatedRepoError,
    HubResponseError,
    HubUnreachableError,
    RepoNotFoundError,
)
from runtime.store import fit
from runtime.store.fit import Machine
from runtime.store.modelscope import endpoint_from_env
from runtime.store.store import Store

CHUNK = 10 * 1024 * 1024
REPO_DIR = "models--modelscope--org--Tiny-GGUF"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a pull that went to Hugging Face would fail
        yield server


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store(Settings.load().paths)
    yield opened
    opened.close()


def quant_repo(hub: FakeHub, name: str = "org/Tiny-GGUF") -> dict[str, bytes]:
    files = {f"tiny-{q}.gguf": tiny_gguf(layers=8, heads=(2, 2), extra=os.urandom(size))
             for q, size in (("Q2_K", 1000), ("Q4_K_M", 2000), ("Q8_0", 4000))}
    hub.add_repo(name, {**files, "README.md": b"# tiny\n", "configuration.json": b"{}"})
    return files


def snapshot_file(store: Store, name: str, role: str = "model") -> Path:
    return next(store.paths.models / f.path for f in store.get(name).files if f.role == role)


def test_explicit_quant_from_modelscope_cn(hub: FakeHub, store: Store) -> None:
    files = quant_repo(hub)
    record = store.pull("modelscope.cn/org/Tiny-GGUF:Q4_K_M")
    assert record.name == "Tiny"
    assert record.source["type"] == "ms" and record.source["revision"] == "master"
    assert record.source["endpoint"] == hub.url
    assert snapshot_file(store, "Tiny").read_bytes() == files["tiny-Q4_K_M.gguf"]
    assert record.files[0].path.startswith(REPO_DIR + "/snapshots/")
    assert record.files[0].sha256 == hashlib.sha256(files["tiny-Q4_K_M.gguf"]).hexdigest()
    assert hub.requests("GET", "/api/v1/models/org/Tiny-GGUF/repo/files")


@pytest.mark.parametrize("source", ["ms://org/Tiny-GGUF", "https://modelscope.cn/models/org/Tiny-GGUF"])
def test_the_quant_that_fits(hub: FakeHub, store: Store, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    quant_repo(hub)
    monkeypatch.setattr(fit, "this_machine", lambda: Machine("RAM", 1 << 40))
    events: list[dict] = []
    record = store.pull(source, progress=events.append)
    assert record.files[0].path.endswith("tiny-Q8_0.gguf")
    assert events[0]["source"] == "ms" and events[0]["choice"]["quant"] == "Q8_0"
    assert events[0]["choice"]["kv_cache"] > 0  # the dimensions came from the header, read with a range
    assert store.pull(source, quant="smallest").files[0].path.endswith("tiny-Q2_K.gguf")


def test_stacklet_hub_makes_modelscope_the_default(hub: FakeHub, store: Store,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    quant_repo(hub)
    monkeypatch.setenv("STACKLET_HUB", "modelscope")
    assert store.pull("org/Tiny-GGUF:Q2_K").source["type"] == "ms"
    monkeypatch.setenv("STACKLET_HUB", "gitee")
    with pytest.raises(Exception, match="huggingface or modelscope"):
        store.pull("org/Tiny-GGUF:Q2_K", name="other")


def test_shards_and_mmproj(hub: FakeHub, store: Store) -> None:
    shards = {f"Q4_K_M/big-Q4_K_M-0000{i}-of-00002.gguf": tiny_gguf(extra=bytes([i])) for i in (1, 2)}
    hub.add_repo("org/Big-GGUF", {**shards, "mmproj-big-f16.gguf": tiny_gguf("clip", template=None)})
    record = store.pull("ms://org/Big-GGUF:Q4_K_M")
    assert [f.role for f in record.files] == ["model", "shard", "mmproj"]
    assert record.metadata["shards"] == 2 and record.metadata["has_mmproj"] is True


def test_a_dropped_connection_resumes(hub: FakeHub, store: Store) -> None:
    data = tiny_gguf(extra=os.urandom(CHUNK + 2_000_000))
    hub.add_repo("org/Drop-GGUF", {"drop-Q4_K_M.gguf": data})
    hub.state.drop_once[hashlib.sha256(data).hexdigest()] = CHUNK + 1_000_000
    store.pull("ms://org/Drop-GGUF")
    assert [r for _, _, r in hub.requests("GET", "/cdn/")] == [None, f"bytes={CHUNK + 1_000_000}-"]
    assert snapshot_file(store, "Drop").read_bytes() == data


def test_an_interrupted_pull_resumes_on_the_rerun(hub: FakeHub, store: Store) -> None:
    data = tiny_gguf(extra=os.urandom(50_000))
    sha = hashlib.sha256(data).hexdigest()
    hub.add_repo("org/Part-GGUF", {"part-Q4_K_M.gguf": data})
    hub.state.stall_after[sha] = 20_000
    hub.state.release.set()  # the stalled answer ends at once: a cut connection

    def interrupt(event: dict) -> None:
        if event["event"] == "progress" and event["bytes"] >= 20_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.pull("ms://org/Part-GGUF", progress=interrupt)
    partial = store.paths.models / "models--modelscope--org--Part-GGUF" / "blobs" / f"{sha}.incomplete"
    assert partial.stat().st_size == 20_000 and store.list() == []
    store.pull("ms://org/Part-GGUF")
    assert hub.requests("GET", "/cdn/")[-1][2] == "bytes=20000-"
    assert snapshot_file(store, "Part").read_bytes() == data
    assert not partial.exists()


def test_a_corrupted_file_is_never_registered(hub: FakeHub, store: Store) -> None:
    files = quant_repo(hub)
    hub.state.corrupt.add(hashlib.sha256(files["tiny-Q2_K.gguf"]).hexdigest())
    with pytest.raises(ChecksumMismatchError, match="Checksum mismatch"):
        store.pull("ms://org/Tiny-GGUF:Q2_K")
    assert store.list() == []
    assert store_contents(store.paths.models) == []


def test_hostile_listings_store_nothing(hub: FakeHub, store: Store) -> None:
    quant_repo(hub)
    repo = hub.state.repos["org/Tiny-GGUF"]

    def escape(info: dict) -> dict:
        info["Data"]["Files"][-1]["Path"] = "../../escape.gguf"
        return info

    repo.rewrite_info = escape
    with pytest.raises(HubResponseError, match="invalid file name"):
        store.pull("ms://org/Tiny-GGUF")
    repo.rewrite_info = lambda info: {"Code": 200, "Success": True, "Data": "nope"}
    with pytest.raises(HubResponseError, match="invalid file list"):
        store.pull("ms://org/Tiny-GGUF")
    assert store_contents(store.paths.models) == []


def test_missing_repo_gated_repo_and_an_unreachable_hub(hub: FakeHub, store: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RepoNotFoundError, match="org/Nope"):
        store.pull("ms://org/Nope")
    hub.add_repo("org/Gated-GGUF", {"gated-Q4_K_M.gguf": tiny_gguf()}, gated_token="ms-good")
    with pytest.raises(GatedRepoError, match="MODELSCOPE_API_TOKEN"):
        store.pull("ms://org/Gated-GGUF")
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms-good")
    assert store.pull("ms://org/Gated-GGUF").name == "Gated"
    assert not any(p.startswith("/cdn/") for p in hub.state.authorized)  # the token stays with the hub
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubUnreachableError, match="hf.co/owner/repo"):
        store.pull("ms://org/Tiny-GGUF")


def test_hugging_face_out_of_reach_suggests_modelscope(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubUnreachableError, match="STACKLET_HUB=modelscope"):
        store.pull("org/Tiny-GGUF")


def test_the_endpoint_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)
    monkeypatch.delenv("MODELSCOPE_DOMAIN", raising=False)
    assert endpoint_from_env() == "https://modelscope.cn"
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "mirror.example")
    assert endpoint_from_env() == "https://mirror.example"
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:8000")
    assert endpoint_from_env() == "http://127.0.0.1:8000"
