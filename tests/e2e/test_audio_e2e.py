"""End to end: `python -m runtime` with the real Piper voice and Whisper tiny.en registered, each served
by its own worker process, driven by the official openai client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from serverproc import local_record, server_process

from runtime import media

FOX = Path(__file__).parent.parent / "data" / "quick-brown-fox.wav"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, piper_voice: Path, whisper_dir: Path) -> Iterator[openai.OpenAI]:
    records = [local_record("joe", "speech", {"model": piper_voice, "config": Path(f"{piper_voice}.json")}),
               local_record("tiny.en", "transcription", {"model": whisper_dir / "model.bin"})]  # as `pull` records it
    with server_process(tmp_path_factory.mktemp("audio-e2e"), records) as (root, key):
        yield openai.OpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0)


def test_speech_round_trips_through_transcription(client):
    with client.audio.speech.with_streaming_response.create(
        model="joe", voice="nova", input="Good morning. The coffee is ready.", response_format="flac"
    ) as response:
        assert response.headers["content-type"] == "audio/flac"
        audio = response.read()
    assert media.probe_audio(audio, "flac").sample_rate == 24000
    text = client.audio.transcriptions.create(model="tiny.en", file=("speech.flac", audio)).text
    assert "coffee" in text.lower() and "morning" in text.lower()
    meta = httpx.get(str(client.base_url).replace("/v1/", "/v1-openai/") + "models/joe",
                     headers={"Authorization": f"Bearer {client.api_key}"}).json()["meta"]
    assert {"joe", "alloy", "cedar"} <= set(meta["voices"]) and meta["sample_rate"] == 22050


def test_transcription_formats_through_the_server(client):
    verbose = client.audio.transcriptions.create(model="tiny.en", file=FOX, response_format="verbose_json",
                                                 timestamp_granularities=["word"])
    assert verbose.language == "english" and verbose.words and "fox" in verbose.text.lower()
    events = list(client.audio.transcriptions.create(model="tiny.en", file=FOX, stream=True))
    assert events[-1].type == "transcript.text.done" and "fox" in events[-1].text.lower()
    with pytest.raises(openai.BadRequestError, match="English-only"):
        client.audio.translations.create(model="tiny.en", file=FOX)


def test_speech_rejections_through_the_server(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="joe", voice="alloy", input="x" * 4097)
    assert caught.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="joe", voice="nobody", input="Hello.")
    assert caught.value.body["param"] == "voice"
