"""Pulls from a local hub server through the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import FakeHub, store_contents, tiny_gguf

from runtime.config import Settings
from runtime.errors import (
    ChecksumMismatchError,
    ConflictError,
    FileNotInRepoError,
    GatedRepoError,
    HubUnreachableError,
    InsufficientStorageError,
    InvalidRequestError,
    PullCancelledError,
    RepoNotFoundError,
)
from runtime.store.store import Store

GGUF = tiny_gguf()
CHUNK = 10 * 1024 * 1024


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


def quant_repo(hub: FakeHub, quants: list[str], name: str = "org/Tiny-GGUF") -> None:
    files = {f"tiny-{q}.gguf": tiny_gguf(extra=q.encode()) for q in quants}
    hub.add_repo(name, {**files, "README.md": b"# tiny\n"})


def model_path(store: Store, name: str, role: str = "model") -> Path:
    record = store.get(name)
    return next(store.paths.models / f.path for f in record.files if f.role == role)


def test_explicit_quant(hub: FakeHub, store: Store) -> None:
    quant_repo(hub, ["Q4_K_M", "Q8_0", "F16"])
    record = store.pull("hf.co/org/Tiny-GGUF:q8_0")
    assert record.name == "Tiny"
    assert [f.path.rsplit("/", 1)[-1] for f in record.files] == ["tiny-Q8_0.gguf"]
    assert record.kind == "llm"
    assert record.metadata["quantization"] == "Q8_0"
    assert record.metadata["context_length"] == 2048
    assert record.metadata["has_chat_template"] is True
    assert record.source["repo"] == "org/Tiny-GGUF"
    assert model_path(store, "Tiny").read_bytes() == tiny_gguf(extra=b"Q8_0")


def test_missing_quant_lists_available(hub: FakeHub, store: Store) -> None:
    quant_repo(hub, ["Q4_K_M", "Q8_0"])
    with pytest.raises(FileNotInRepoError) as caught:
        store.pull("org/Tiny-GGUF:Q6_K")
    assert "Q6_K" in caught.value.message
    assert "Available: Q4_K_M, Q8_0" in caught.value.message
    assert store.list() == []


def test_sharded_gguf_pulls_every_shard(hub: FakeHub, store: Store) -> None:
    shards = {f"Q4_K_M/big-Q4_K_M-0000{i}-of-00003.gguf": tiny_gguf(extra=bytes([i])) for i in (1, 2, 3)}
    hub.add_repo("org/Big-GGUF", {**shards, "big-Q8_0.gguf": GGUF})
    record = store.pull("org/Big-GGUF:Q4_K_M")
    assert [f.role for f in record.files] == ["model", "shard", "shard"]
    assert [f.path.rsplit("/", 1)[-1] for f in record.files] == sorted(p.rsplit("/", 1)[-1] for p in shards)
    assert record.metadata["shards"] == 3
    assert record.metadata["parameters"] == 3 * 32


def test_mmproj_comes_along(hub: FakeHub, store: Store) -> None:
    hub.add_repo("org/Vision-GGUF", {
        "vision-Q4_K_M.gguf": GGUF,
        "mmproj-vision-f16.gguf": tiny_gguf("clip", template=None),
        "mmproj-vision-Q8_0.gguf": tiny_gguf("clip", template=None, extra=b"q8"),
    })
    record = store.pull("org/Vision-GGUF")
    roles = {f.role: f.path.rsplit("/", 1)[-1] for f in record.files}
    assert roles == {"model": "vision-Q4_K_M.gguf", "mmproj": "mmproj-vision-f16.gguf"}
    assert record.metadata["has_mmproj"] is True


def test_embedding_kind_from_pooling(hub: FakeHub, store: Store) -> None:
    hub.add_repo("org/Embed-GGUF", {"embed-F16.gguf": tiny_gguf("bert", template=None, pooling=1)})
    record = store.pull("org/Embed-GGUF")
    assert record.kind == "embedding"
    assert record.engine == "llama"
    assert record.metadata["pooling"] == "mean"


def test_whisper_repo(hub: FakeHub, store: Store) -> None:
    vocabulary = "\n".join(f"tok{i}" for i in range(51865)) + "\n"
    hub.add_repo("Systran/faster-whisper-tiny", {
        "model.bin": b"\0" * 1000, "config.json": b'{"lang_ids": []}', "tokenizer.json": b"{}",
        "vocabulary.txt": vocabulary.encode(), "README.md": b"whisper",
    })
    record = store.pull("Systran/faster-whisper-tiny")
    assert record.kind == "transcription"
    assert record.engine == "whisper"
    assert sorted(f.role for f in record.files) == ["config", "model", "tokenizer", "vocabulary"]
    assert record.metadata["multilingual"] is True


def test_piper_voice_needs_file_choice(hub: FakeHub, store: Store) -> None:
    config = json.dumps({"audio": {"sample_rate": 22050}, "language": {"code": "en_US"}, "num_speakers": 1})
    hub.add_repo("rhasspy/piper-voices", {
        "en/en_US/joe/medium/en_US-joe-medium.onnx": b"onnx-joe",
        "en/en_US/joe/medium/en_US-joe-medium.onnx.json": config.encode(),
        "de/de_DE/eva/x_low/de_DE-eva-x_low.onnx": b"onnx-eva",
        "de/de_DE/eva/x_low/de_DE-eva-x_low.onnx.json": config.encode(),
    })
    with pytest.raises(FileNotInRepoError, match="--file"):
        store.pull("rhasspy/piper-voices")
    record = store.pull("rhasspy/piper-voices", files=["en_US-joe-*.onnx"], name="joe")
    assert record.kind == "speech"
    assert [f.role for f in record.files] == ["model", "config"]
    assert record.metadata["sample_rate"] == 22050
    assert record.metadata["language"] == "en_US"


def test_diffusion_checkpoint_with_companions(hub: FakeHub, store: Store) -> None:
    header = json.dumps({"model.diffusion_model.double_blocks.0.img_attn.qkv.weight":
                         {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    checkpoint = len(header).to_bytes(8, "little") + header + b"\0\0"
    hub.add_repo("org/flux-mini", {"flux-mini.safetensors": checkpoint, "ae.safetensors": checkpoint,
                                   "taesd_decoder.safetensors": checkpoint})
    record = store.pull("org/flux-mini", files=["flux-mini.safetensors", "taesd*"])
    assert record.kind == "image"
    assert record.engine == "diffusion"
    assert {f.role for f in record.files} == {"model", "taesd"}
    assert record.metadata["family"] == "flux"


def test_resume_after_dropped_connection(hub: FakeHub, store: Store) -> None:
    data = tiny_gguf(extra=os.urandom(CHUNK + 2_000_000))
    hub.add_repo("org/Drop-GGUF", {"drop-Q4_K_M.gguf": data})
    hub.state.drop_once[hashlib.sha256(data).hexdigest()] = CHUNK + 1_000_000
    store.pull("org/Drop-GGUF")
    assert [r for _, _, r in hub.requests("GET", "/cdn/")] == [None, f"bytes={CHUNK + 1_000_000}-"]  # where it stopped
    assert model_path(store, "Drop").read_bytes() == data


def test_rerun_resumes_a_partial(hub: FakeHub, store: Store) -> None:
    data = tiny_gguf(extra=os.urandom(50_000))
    sha = hashlib.sha256(data).hexdigest()
    hub.add_repo("org/Part-GGUF", {"part-Q4_K_M.gguf": data})
    blobs = store.paths.models / "models--org--Part-GGUF" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{sha}.incomplete").write_bytes(data[:20_000])  # what Ctrl-C leaves behind
    store.pull("org/Part-GGUF")
    assert [r for _, _, r in hub.requests("GET", "/cdn/")] == ["bytes=20000-"]
    assert model_path(store, "Part").read_bytes() == data
    assert not (blobs / f"{sha}.incomplete").exists()


def test_interrupt_leaves_registry_untouched_and_rerun_skips_done_files(hub: FakeHub, store: Store) -> None:
    shards = {f"two-Q4_K_M-0000{i}-of-00002.gguf": tiny_gguf(extra=bytes([i])) for i in (1, 2)}
    hub.add_repo("org/Two-GGUF", shards)

    def interrupt_second_file(event: dict) -> None:
        if event["event"] == "file_start" and event["file"].endswith("00002-of-00002.gguf"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.pull("org/Two-GGUF", progress=interrupt_second_file)
    assert store.list() == []
    store.pull("org/Two-GGUF")
    assert len(hub.requests("GET", "/cdn/")) == 2  # the first shard was not fetched twice


def test_ctrl_c_in_the_cli_keeps_a_resumable_partial(hub: FakeHub, stacklet_home: Path) -> None:
    data = tiny_gguf(extra=os.urandom(CHUNK + 2_000_000))
    sha = hashlib.sha256(data).hexdigest()
    hub.add_repo("org/Slow-GGUF", {"slow-Q4_K_M.gguf": data})
    hub.state.stall_after[sha] = CHUNK + 1_000_000
    env = {**os.environ, "HF_ENDPOINT": hub.url, "STACKLET_HOME": str(stacklet_home)}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "pull", "org/Slow-GGUF", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert hub.state.stalled.wait(60)
    partial = stacklet_home / "cache" / "hub" / "models--org--Slow-GGUF" / "blobs" / f"{sha}.incomplete"
    _wait_for_size(partial, CHUNK)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    hub.state.release.set()
    assert proc.returncode == 130
    assert "resume" in err
    assert partial.stat().st_size == CHUNK + 1_000_000  # every byte received is kept
    rerun = subprocess.run([sys.executable, "-m", "cli", "list", "--json"], env=env, capture_output=True, text=True)
    assert json.loads(rerun.stdout) == []
    resumed = subprocess.run([sys.executable, "-m", "cli", "pull", "org/Slow-GGUF", "--json"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert hub.requests("GET", "/cdn/")[-1][2] == f"bytes={CHUNK + 1_000_000}-"
    registered = json.loads(resumed.stdout.splitlines()[-1])
    assert registered["event"] == "registered" and registered["size"] == len(data)


def _wait_for_size(path: Path, size: int) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= size:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {size} bytes")


def test_checksum_mismatch_registers_nothing(hub: FakeHub, store: Store) -> None:
    quant_repo(hub, ["Q4_K_M"])
    hub.state.corrupt.add(hashlib.sha256(tiny_gguf(extra=b"Q4_K_M")).hexdigest())
    with pytest.raises(ChecksumMismatchError, match="Checksum mismatch"):
        store.pull("org/Tiny-GGUF")
    assert store.list() == []
    assert store_contents(store.paths.models) == []


def test_gated_repo_needs_a_token(hub: FakeHub, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_repo("org/Gated-GGUF", {"gated-Q4_K_M.gguf": GGUF}, gated_token="hf_good")
    with pytest.raises(GatedRepoError, match="HF_TOKEN"):
        store.pull("org/Gated-GGUF")
    with pytest.raises(GatedRepoError, match="HF_TOKEN"):
        store.pull("org/Gated-GGUF", token="hf_wrong")
    record = store.pull("org/Gated-GGUF", token="hf_good")
    assert record.name == "Gated"
    assert "hf_good" not in json.dumps(record.to_dict())  # the token is never stored
    assert hub.state.authorized and not any(p.startswith("/cdn/") for p in hub.state.authorized)
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    assert store.pull("org/Gated-GGUF", name="gated-env").kind == "llm"


def test_missing_repo_and_revision(hub: FakeHub, store: Store) -> None:
    quant_repo(hub, ["Q4_K_M"])
    with pytest.raises(RepoNotFoundError, match="org/Nope"):
        store.pull("org/Nope")
    with pytest.raises(RepoNotFoundError, match="v9"):
        store.pull("org/Tiny-GGUF", revision="v9")


def test_hub_unreachable(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(HubUnreachableError, match="Cannot reach"):
        store.pull("org/Tiny-GGUF")


def test_offline_mode_says_so(hub: FakeHub, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    quant_repo(hub, ["Q4_K_M"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match="HF_HUB_OFFLINE"):
        store.pull("org/Tiny-GGUF")
    assert hub.state.log == []


def test_name_taken_by_another_source_fails_before_download(hub: FakeHub, store: Store) -> None:
    quant_repo(hub, ["Q4_K_M"])
    quant_repo(hub, ["Q4_K_M"], name="other/Tiny-GGUF")
    store.pull("org/Tiny-GGUF")
    with pytest.raises(ConflictError, match="--name"):
        store.pull("other/Tiny-GGUF")
    assert len(hub.requests("GET", "/cdn/")) == 1
    assert store.pull("org/Tiny-GGUF").name == "Tiny"  # same source: a refresh, not a conflict


def test_rm_keeps_a_blob_another_quant_shares(hub: FakeHub, store: Store) -> None:
    hub.add_repo("org/Vision-GGUF", {"v-Q4_K_M.gguf": GGUF, "v-Q8_0.gguf": tiny_gguf(extra=b"8"),
                                     "mmproj-v-f16.gguf": tiny_gguf("clip", template=None)})
    store.pull("org/Vision-GGUF:Q4_K_M", name="v4")
    store.pull("org/Vision-GGUF:Q8_0", name="v8")
    projector = model_path(store, "v8", "mmproj")
    _, freed = store.remove("v4")
    assert freed == len(GGUF)
    assert projector.read_bytes()[:4] == b"GGUF"
    store.remove("v8")
    assert not (store.paths.models / "models--org--Vision-GGUF").exists()


def test_a_cancelled_pull_stops_at_once_and_a_rerun_resumes(hub: FakeHub, store: Store,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.store import hub as hub_module

    monkeypatch.setattr(hub_module, "DOWNLOAD_TIMEOUT_S", 600)  # only the cancel can end the stalled read
    data = tiny_gguf(extra=os.urandom(CHUNK + 2_000_000))
    hub.add_repo("org/Stall-GGUF", {"stall-Q4_K_M.gguf": data})
    hub.state.stall_after[hashlib.sha256(data).hexdigest()] = CHUNK
    cancel, outcome = threading.Event(), []

    def pull() -> None:
        try:
            store.pull("org/Stall-GGUF", cancelled=cancel.is_set)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    thread = threading.Thread(target=pull)
    thread.start()
    assert hub.state.stalled.wait(60)
    cancel.set()
    thread.join(60)
    assert not thread.is_alive()
    assert [type(e) for e in outcome] == [PullCancelledError]
    assert "pull again to resume" in outcome[0].message
    assert hub.state.client_gone.wait(10)  # the stalled connection was shut, not left to its timeout
    assert len(hub.requests("GET", "/cdn/")) == 1  # and not retried
    assert store.list() == []
    partial = f"models--org--Stall-GGUF/blobs/{hashlib.sha256(data).hexdigest()}.incomplete"
    assert store_contents(store.paths.models) == ["models--org--Stall-GGUF", "models--org--Stall-GGUF/blobs",
                                                  partial]
    kept = (store.paths.models / partial).stat().st_size  # what had arrived when the cancel came
    assert 0 < kept <= CHUNK
    store.pull("org/Stall-GGUF")
    assert hub.requests("GET", "/cdn/")[-1][2] == f"bytes={kept}-"
    assert model_path(store, "Stall").read_bytes() == data


def test_a_revision_is_checked_before_anything_is_fetched(hub: FakeHub, store: Store) -> None:
    quant_repo(hub, ["Q4_K_M"])
    with pytest.raises(InvalidRequestError, match=r"Invalid revision '\.\./\.\./x'") as caught:
        store.pull("org/Tiny-GGUF", revision="../../x")
    assert caught.value.param == "revision"
    assert hub.state.log == []
    commit = hub.state.repos["org/Tiny-GGUF"].commit
    assert store.pull("org/Tiny-GGUF", revision=commit).source["commit"] == commit


def test_the_ref_is_written_once_the_model_is_registered(hub: FakeHub, store: Store) -> None:
    quant_repo(hub, ["Q4_K_M"])
    store.pull("org/Tiny-GGUF")
    ref = store.paths.models / "models--org--Tiny-GGUF" / "refs" / "main"
    assert ref.read_text() == hub.state.repos["org/Tiny-GGUF"].commit


def test_a_failed_registration_takes_its_downloads_back(hub: FakeHub, store: Store) -> None:
    quant_repo(hub, ["Q4_K_M"])
    store.pull("org/Tiny-GGUF", name="first")
    hub.add_repo("org/Big-Template-GGUF", {"big-Q4_K_M.gguf": tiny_gguf(template="x" * 50_000)})
    pages = store.registry._conn.execute("PRAGMA page_count").fetchone()[0]
    store.registry._conn.execute(f"PRAGMA max_page_count = {pages}")  # the database cannot grow: a full disk
    with pytest.raises(InsufficientStorageError, match="disk is full"):
        store.pull("org/Big-Template-GGUF")
    assert [r.name for r in store.list()] == ["first"]
    assert not any("Big-Template" in p for p in store_contents(store.paths.models))
