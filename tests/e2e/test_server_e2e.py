"""End to end: `python -m runtime` on a loopback port, the real scheduler and worker processes with the
fake engine (plumbing only), driven by the official openai client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from serverproc import server_process

from runtime.store.registry import ModelRecord

FAKES = {"fake-llm": "llm", "fake-tts": "speech", "fake-whisper": "transcription"}
FOX_WAV = Path(__file__).parent.parent / "data" / "quick-brown-fox.wav"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(root URL, API key) of a running server with fake models registered."""
    records = [ModelRecord(name=name, kind=kind, source={"type": "fake"}, engine="fake")
               for name, kind in FAKES.items()]
    with server_process(tmp_path_factory.mktemp("e2e-home"), records) as running:
        yield running


def client(server: tuple[str, str], prefix: str = "/v1") -> openai.OpenAI:
    root, key = server
    return openai.OpenAI(base_url=root + prefix, api_key=key, max_retries=0)


@pytest.mark.parametrize("prefix", ["/v1", "/v1-openai"])
def test_chat_through_a_worker(server, prefix):
    raw = client(server, prefix).chat.completions.with_raw_response.create(
        model="fake-llm", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert raw.headers["x-request-id"].startswith("req_")
    completion = raw.parse()
    assert completion.model == "fake-llm"
    assert completion.usage.completion_tokens == 5


def test_streamed_chat_ends_cleanly(server):
    stream = client(server).chat.completions.create(
        model="fake-llm", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == 4


def test_speech_and_multipart_transcription(server):
    oai = client(server)
    audio = oai.audio.speech.create(model="fake-tts", voice="fake", input="Hello there.", response_format="wav")
    assert audio.content[:4] == b"RIFF"
    transcript = oai.audio.transcriptions.create(model="fake-whisper", file=FOX_WAV.open("rb"))
    assert transcript.text
    with pytest.raises(openai.NotFoundError) as missing:
        oai.audio.transcriptions.create(model="nope", file=FOX_WAV.open("rb"))
    assert missing.value.code == "model_not_found"


def test_models_management_and_metrics(server):
    root, key = server
    oai = client(server, "/v1-openai")
    oai.chat.completions.create(model="fake-llm", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert {m.id for m in oai.models.list()} == set(FAKES)
    assert oai.models.retrieve("fake-llm").model_extra["meta"]["context_length"] == 2048
    headers = {"Authorization": f"Bearer {key}"}
    managed = httpx.get(f"{root}/v1/models/fake-llm", headers=headers).json()
    assert managed["state"] == "loaded"
    assert managed["worker"]["pid"] > 0
    assert managed["expires_at"] > time.time()
    unloaded = httpx.post(f"{root}/v1/models/fake-llm/unload", headers=headers).json()
    assert unloaded["unloaded"] is True
    assert httpx.get(f"{root}/v1/models/fake-llm", headers=headers).json()["state"] == "available"
    metrics = httpx.get(f"{root}/metrics", headers=headers).text
    assert 'stacklet_requests_total{method="POST",route="/v1-openai/chat/completions",status="200"}' in metrics


def test_wrong_key_and_health(server):
    root, _ = server
    bad = openai.OpenAI(base_url=root + "/v1", api_key="sk-wrong-1234567890", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as wrong:
        bad.models.list()
    assert wrong.value.code == "invalid_api_key"
    assert httpx.get(f"{root}/health").json()["status"] == "ok"
