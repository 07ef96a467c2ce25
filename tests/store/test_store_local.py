"""Local imports of the real offline models, and list/show/rm on the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.config import Settings
from runtime.errors import InvalidRequestError, ModelNotFoundError, StoreError
from runtime.store.registry import ModelFile, ModelRecord
from runtime.store.selection import select
from runtime.store.store import Store


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store(Settings.load().paths)
    yield opened
    opened.close()


def test_smollm_import(store: Store, smollm_gguf: Path) -> None:
    record = store.pull(str(smollm_gguf))
    assert record.name == "SmolLM2-135M-Instruct"
    assert record.kind == "llm"
    assert record.engine == "llama"
    meta = record.metadata
    assert meta["architecture"] == "llama"
    assert meta["context_length"] == 8192
    assert meta["has_chat_template"] is True
    assert "<|im_start|>" in meta["chat_template"]
    assert meta["quantization"] == "Q4_1"
    assert meta["parameters"] == 134_515_008
    stored = store.paths.models / record.files[0].path
    assert stored.read_bytes()[:4] == b"GGUF"
    assert record.spec(store.paths).files["model"] == stored


def test_minilm_import_is_an_embedding_model(store: Store, minilm_gguf: Path) -> None:
    record = store.pull(str(minilm_gguf), name="minilm")
    assert record.kind == "embedding"
    assert record.metadata["pooling"] == "mean"
    assert record.metadata["embedding_length"] == 384
    assert record.metadata["architecture"] == "bert"


def test_whisper_dir_import(store: Store, whisper_dir: Path) -> None:
    record = store.pull(str(whisper_dir), name="whisper-tiny.en")
    assert record.kind == "transcription"
    assert record.engine == "whisper"
    assert record.metadata["multilingual"] is False
    spec = record.spec(store.paths)
    assert (spec.files["model"].parent / "vocabulary.txt").is_file()


def test_piper_voice_import_brings_its_config(store: Store, piper_voice: Path) -> None:
    record = store.pull(str(piper_voice))
    assert record.name == "en_US-joe-medium"
    assert record.kind == "speech"
    assert [f.role for f in record.files] == ["model", "config"]
    assert record.metadata["sample_rate"] == 22050
    assert record.metadata["language"] == "en_US"
    assert record.metadata["speakers"] == 1


def test_kind_override(store: Store, smollm_gguf: Path) -> None:
    assert store.pull(str(smollm_gguf), name="smol-embed", kind="embedding").kind == "embedding"
    with pytest.raises(InvalidRequestError, match="Unknown kind"):
        store.pull(str(smollm_gguf), kind="video")


def test_rm_keeps_shared_blobs(store: Store, smollm_gguf: Path) -> None:
    first = store.pull(str(smollm_gguf), name="smol-a")
    store.pull(str(smollm_gguf), name="smol-b")
    blob = (store.paths.models / first.files[0].path).resolve()
    store.remove("smol-a")
    assert blob.is_file()
    assert (store.paths.models / store.get("smol-b").files[0].path).read_bytes()[:4] == b"GGUF"
    store.remove("smol-b")
    assert not blob.exists()
    assert not any(store.paths.models.glob("models--*"))
    assert smollm_gguf.is_file()  # the imported original is never touched


def test_rm_frees_only_unshared_files(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "voices"
    folder.mkdir()
    (folder / "a.onnx").write_bytes(b"voice-a")
    (folder / "b.onnx").write_bytes(b"voice-b")
    shared = b'{"audio": {"sample_rate": 16000}, "language": {"code": "en_GB"}}'
    (folder / "a.onnx.json").write_bytes(shared)
    (folder / "b.onnx.json").write_bytes(shared)
    store.pull(str(folder / "a.onnx"))
    b = store.pull(str(folder / "b.onnx"))
    store.remove("a")
    for file in b.files:
        assert (store.paths.models / file.path).read_bytes() in (b"voice-b", shared)
    assert [r.name for r in store.list()] == ["b"]


def test_rm_never_touches_files_registered_in_place(store: Store, tmp_path: Path) -> None:
    weights = tmp_path / "fake.bin"
    weights.write_bytes(b"x")
    store.registry.add(ModelRecord("fake", "llm", {"type": "fake"}, [ModelFile("model", str(weights), 1)],
                                   engine="fake"))
    store.remove("fake")
    assert weights.exists()
    with pytest.raises(ModelNotFoundError):
        store.get("fake")


def test_missing_local_path_is_a_clear_error(store: Store) -> None:
    with pytest.raises(StoreError, match="No such file"):
        store.pull("./nowhere/model.gguf")
    with pytest.raises(InvalidRequestError, match="owner/repo"):
        store.pull("not a repo")


def test_selection_of_sharded_quants() -> None:
    paths = [f"m-Q8_0-0000{i}-of-00002.gguf" for i in (1, 2)] + ["m-IQ4_XS.gguf", "mmproj-m-F16.gguf"]
    chosen = select(paths)
    assert [(s.role, s.path) for s in chosen] == [("model", "m-IQ4_XS.gguf"), ("mmproj", "mmproj-m-F16.gguf")]
    chosen = select(paths, quant="q8_0")
    assert [s.role for s in chosen] == ["model", "shard", "mmproj"]


def test_diffusion_checkpoint_with_taesd_from_a_folder(store: Store, sd15_checkpoint: Path, taesd: Path) -> None:
    assert sd15_checkpoint.parent == taesd.parent
    record = store.pull(str(sd15_checkpoint.parent), name="sd15", files=[sd15_checkpoint.name, taesd.name])
    assert record.kind == "image"
    assert record.engine == "diffusion"
    assert [f.role for f in record.files] == ["model", "taesd"]
    assert record.metadata["family"] == "sd1"
    assert record.metadata["has_taesd"] is True
    assert set(record.spec(store.paths).files) == {"model", "taesd"}


def test_a_database_from_before_keep_alive_keeps_its_models(tmp_path: Path) -> None:
    import sqlite3

    from runtime.store.registry import Registry

    paths = Settings.load(environ={"STACKLET_HOME": str(tmp_path)}).paths
    paths.database.parent.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(paths.database)
    old.execute("CREATE TABLE models (name TEXT PRIMARY KEY, kind TEXT NOT NULL, engine TEXT NOT NULL, "
                "source TEXT NOT NULL, files TEXT NOT NULL, metadata TEXT NOT NULL, options TEXT NOT NULL, "
                "created INTEGER NOT NULL)")
    old.execute("""INSERT INTO models VALUES ('old', 'llm', 'llama', '"a/b"', '[]', '{}', '{}', 1)""")
    old.commit()
    old.close()
    registry = Registry(paths)
    record = registry.get("old")
    assert (record.kind, record.source, record.keep_alive, record.created) == ("llm", "a/b", None, 1)
    registry.configure("old", {"keep_alive": "10m"})
    assert Registry(paths).get("old").keep_alive == 600
