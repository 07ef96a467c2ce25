"""Shared fixtures: every test runs with STACKLET_HOME in a temp dir; real test models are session-wide."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import huggingface_hub.constants  # noqa: F401  (it reads HF_HUB_OFFLINE once, on import: before any test sets it)
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
def smollm_mmproj() -> Path:
    """A random-weight LLaVA projector for SmolLM2 (cli/demo_models.py): images change answers, meaninglessly."""
    return testmodels.smollm_mmproj()


@pytest.fixture(scope="session")
def minilm_gguf() -> Path:
    return testmodels.minilm_gguf()


@pytest.fixture(scope="session")
def minilm_reranker_gguf() -> Path:
    """MiniLM fine-tuned as a cross-encoder (cli/demo_models.py, tests/train_reranker.py)."""
    return testmodels.minilm_reranker_gguf()


@pytest.fixture(scope="session")
def whisper_dir() -> Path:
    return testmodels.whisper_dir()


@pytest.fixture(scope="session")
def whisper_base_dir() -> Path:
    return testmodels.whisper_base_dir()


@pytest.fixture(scope="session")
def piper_voice() -> Path:
    return testmodels.piper_voice()


@pytest.fixture(scope="session")
def sd15_checkpoint() -> Path:
    return testmodels.sd15_checkpoint()


@pytest.fixture(scope="session")
def taesd() -> Path:
    return testmodels.taesd()


@pytest.fixture(scope="module")
def live_server() -> Iterator[Callable[[Any], str]]:
    """Start ASGI apps on real uvicorn servers on loopback ports: `base_url = live_server(app)`.
    The servers stop when the module's tests are done."""
    import threading

    import uvicorn

    running: list[tuple[Any, threading.Thread]] = []

    def start(app: Any) -> str:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        running.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def client(base_url: str) -> Any:
    """The official openai client on the module's `base_url` fixture."""
    import openai

    return openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)


@pytest.fixture(scope="session")
def smollm_engine(smollm_gguf: Path) -> Iterator[Any]:
    """A real LlamaEngine on SmolLM2-135M-Instruct, shared by the text tests."""
    from runtime.engines.llama.engine import LlamaEngine
    from runtime.spec import ModelSpec

    engine = LlamaEngine(ModelSpec("SmolLM2-135M-Instruct", "llm", "llama", {"model": smollm_gguf}))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def smollm_vision_engine(smollm_gguf: Path, smollm_mmproj: Path) -> Iterator[Any]:
    """A real LlamaEngine on SmolLM2-135M-Instruct with its (random-weight) vision projector."""
    from runtime.engines.llama.engine import LlamaEngine
    from runtime.spec import ModelSpec

    files = {"model": smollm_gguf, "mmproj": smollm_mmproj}
    engine = LlamaEngine(ModelSpec("SmolLM2-135M-vision", "llm", "llama", files, {"has_mmproj": True}))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def minilm_engine(minilm_gguf: Path) -> Iterator[Any]:
    """A real LlamaEngine on all-MiniLM-L6-v2 (embeddings only)."""
    from runtime.engines.llama.engine import LlamaEngine
    from runtime.spec import ModelSpec

    engine = LlamaEngine(ModelSpec("all-MiniLM-L6-v2", "embedding", "llama", {"model": minilm_gguf}))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def text_app() -> Callable[[Any], Any]:
    """`text_app(engine)`: an app serving only the text routes (no lifespan, so shared engines stay open)."""
    import apps

    return apps.text_app


# Markers, set from what a test uses: `-m real_engine` runs the behaviour tests on real small models,
# `-m fake_engine` the plumbing tests on the fake engine.
REAL_MODELS = {"smollm_gguf", "smollm_mmproj", "minilm_gguf", "minilm_reranker_gguf", "whisper_dir", "whisper_base_dir",
               "piper_voice", "sd15_checkpoint", "taesd"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    fake_modules: dict[str, bool] = {}
    for item in items:
        if REAL_MODELS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_engine)
        path = str(item.path)
        if path not in fake_modules:
            source = item.path.read_text()
            fake_modules[path] = "FakeEngine" in source or '"fake"' in source
        if fake_modules[path]:
            item.add_marker(pytest.mark.fake_engine)
