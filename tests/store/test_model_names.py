"""Model names: what the store and the registry accept. Names travel in URL paths that clients normalise,
so no '/', no '..', ASCII only; the names pulls give models by default stay valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli.commands.demo import MODELS as DEMO_MODELS
from runtime.config import Settings
from runtime.errors import InvalidRequestError
from runtime.store.registry import MODEL_NAME_PATTERN, ModelRecord, Registry, check_name
from runtime.store.store import Store

VALID = ["Tiny", "SmolLM2-135M-Instruct", "all-MiniLM-L6-v2", "whisper-tiny.en", "llama3:8b", "sd15", "a+b", "m",
         "x" * 128, "Qwen2.5-0.5B_Instruct"]
INVALID = ["a/../../b", "x/load", "org/model", "..", "a..b", "", "-x", ".hidden", "_x", "a b", "modèle", "名前",
           "a\x00b", "a\nb", "a\\b", "a%2Fb", "a?b", "a#b", "x" * 129, "x" * 100_000]


@pytest.mark.parametrize("name", VALID)
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", INVALID)
def test_unsafe_names_are_refused_with_the_pattern(name):
    with pytest.raises(InvalidRequestError, match=re.escape(MODEL_NAME_PATTERN)) as err:
        check_name(name)
    assert err.value.param == "name"
    assert len(err.value.message) < 400  # a huge name is not echoed whole


def test_the_demo_models_default_names_are_valid():
    for model in DEMO_MODELS:
        check_name(model.name)


def test_the_registry_refuses_an_unsafe_name():
    registry = Registry(Settings.load().paths)
    with pytest.raises(InvalidRequestError):
        registry.add(ModelRecord(name="x/load", kind="llm", source={"type": "fake"}, engine="fake"))
    assert registry.list() == []


@pytest.mark.parametrize("name", ["a/../../b", "x/load"])
def test_an_import_with_an_unsafe_name_fails_before_reading_a_file(minilm_gguf: Path, name: str):
    store = Store(Settings.load().paths)
    events: list[dict] = []
    with pytest.raises(InvalidRequestError, match="Invalid model name"):
        store.pull(str(minilm_gguf), name=name, progress=events.append)
    assert events == [] and not any(store.paths.models.rglob("*"))
    store.close()
