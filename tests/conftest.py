"""Shared fixtures: every test runs with STACKLET_HOME in a temp dir; real test models are session-wide."""

from __future__ import annotations

from pathlib import Path

import pytest
import testmodels


@pytest.fixture(autouse=True)
def stacklet_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "stacklet-home"
    monkeypatch.setenv("STACKLET_HOME", str(home))
    for name in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "STACKLET_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    return testmodels.smollm_gguf()


@pytest.fixture(scope="session")
def minilm_gguf() -> Path:
    return testmodels.minilm_gguf()


@pytest.fixture(scope="session")
def whisper_dir() -> Path:
    return testmodels.whisper_dir()


@pytest.fixture(scope="session")
def piper_voice() -> Path:
    return testmodels.piper_voice()


@pytest.fixture(scope="session")
def sd15_checkpoint() -> Path:
    return testmodels.sd15_checkpoint()


@pytest.fixture(scope="session")
def taesd() -> Path:
    return testmodels.taesd()
