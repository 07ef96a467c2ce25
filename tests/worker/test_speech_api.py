"""/v1/audio/speech on the real Piper voice: formats, speed, streaming, SSE and every rejection."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from apps import audio_app

from runtime import media
from runtime.engines.speech import MAX_PHONEMES, OPENAI_VOICES, PiperEngine, phonemize
from runtime.spec import ModelSpec

TEXT = "Hello there. This is a short test of the speech engine."
SENTENCES = "The first sentence is here. Then a second one follows. A third comes next. And this is the last."


@pytest.fixture(scope="module")
def engine(piper_voice: Path) -> Iterator[PiperEngine]:
    spec = ModelSpec("joe", "speech", "piper", {"model": piper_voice, "config": Path(f"{piper_voice}.json")})
    loaded = PiperEngine(spec)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def base_url(engine: PiperEngine, live_server: Any) -> str:
    return live_server(audio_app(engine)) + "/v1"


def duration(data: bytes, response_format: str) -> float:
    return media.probe_audio(data, response_format).duration


@pytest.mark.parametrize("response_format", media.SPEECH_FORMATS)
def test_every_format_decodes_at_24khz_with_a_plausible_length(client, response_format):
    with client.audio.speech.with_streaming_response.create(
        model="joe", voice="alloy", input=TEXT, response_format=response_format
    ) as response:
        content_type = response.headers["content-type"]
        data = response.read()
    probe = media.probe_audio(data, response_format)
    assert content_type == media.CONTENT_TYPES[response_format]
    assert probe.channels == 1
    assert probe.sample_rate == (48000 if response_format == "opus" else 24000)  # Opus always decodes at 48k
    assert 1.5 < probe.duration < 8.0


def test_pcm_is_raw_24khz_s16le_and_mp3_is_the_default(client):
    pcm = client.audio.speech.create(model="joe", voice="alloy", input=TEXT, response_format="pcm").content
    mp3 = client.audio.speech.create(model="joe", voice="alloy", input=TEXT).content
    assert len(pcm) % 2 == 0
    assert abs(len(pcm) / 2 / 24000 - duration(mp3, "mp3")) < 0.6  # same text, same length (noise aside)
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF


def test_speed_changes_the_duration(client):
    fast = client.audio.speech.create(model="joe", voice="alloy", input=TEXT, response_format="wav", speed=2.0)
    slow = client.audio.speech.create(model="joe", voice="alloy", input=TEXT, response_format="wav", speed=0.5)
    assert duration(slow.content, "wav") > 2.5 * duration(fast.content, "wav")


def test_voices_cover_speakers_and_openai_names(engine, client):
    info = engine.info()
    assert info["voices"][0] == "joe"
    assert set(OPENAI_VOICES) <= set(info["voices"])
    assert info["sample_rate"] == 22050 and info["language"] == "en_US"
    assert engine.speaker_id("nova") == engine.speaker_id("joe") == 0  # one speaker takes every name
    by_id = httpx.post(str(client.base_url) + "audio/speech",
                       json={"model": "joe", "input": "Hi.", "voice": {"id": "joe"}, "response_format": "wav"})
    assert by_id.status_code == 200 and duration(by_id.content, "wav") > 0.2


def test_sentences_are_split_with_their_punctuation():
    sentences = phonemize("Hello, world. Is it raining? Yes!", "en-us")
    assert len(sentences) == 3
    assert "," in sentences[0] and sentences[0].endswith(".")
    assert sentences[1].endswith("?") and sentences[2].endswith("!")
    assert len(phonemize("Dr. Smith met Mrs. Jones. They left.", "en-us")) == 2  # titles end no sentence


def test_run_on_text_is_cut_at_word_breaks():
    pieces = phonemize("word " * 400, "en-us")
    assert len(pieces) > 1 and all(len(p) <= MAX_PHONEMES for p in pieces)
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in pieces)


class GatedEngine:
    """The real engine, but the last sentence waits until the client has seen the first bytes."""

    def __init__(self, engine: PiperEngine) -> None:
        self.engine = engine
        self.capabilities = engine.capabilities
        self.voices = engine.voices
        self.first_bytes_seen = threading.Event()
        self.log: list[str] = []

    def synthesize(self, text: str, voice: str | None, speed: float, cancel: threading.Event) -> Iterator[Any]:
        sentences = len(phonemize(text, self.engine.espeak_voice))
        for number, chunk in enumerate(self.engine.synthesize(text, voice, speed, cancel), start=1):
            if number == sentences:
                self.log.append("client saw bytes" if self.first_bytes_seen.wait(30) else "client saw nothing")
            self.log.append(f"sentence {number}")
            yield chunk


def test_speech_streams_before_the_last_sentence_is_synthesised(engine, live_server):
    gated = GatedEngine(engine)
    client = openai.OpenAI(base_url=live_server(audio_app(gated)) + "/v1", api_key="none", max_retries=0)
    chunks = []
    with client.audio.speech.with_streaming_response.create(model="joe", voice="alloy", input=SENTENCES,
                                                            response_format="pcm") as response:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            gated.first_bytes_seen.set()
    assert gated.log == ["sentence 1", "sentence 2", "sentence 3", "client saw bytes", "sentence 4"]
    assert len(chunks) >= 4
    assert len(b"".join(chunks)) / 2 / 24000 > 3.0


def test_sse_sends_base64_deltas_then_done_with_usage(base_url):
    body = {"model": "joe", "input": SENTENCES, "voice": "alloy", "response_format": "pcm", "stream_format": "sse"}
    response = httpx.post(base_url + "/audio/speech", json=body, timeout=120)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert len(events) >= 5  # one delta per sentence at least
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(pcm) / 2 / 24000 > 3.0
    usage = events[-1]["usage"]
    assert events[-1]["type"] == "speech.audio.done"
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert "[DONE]" not in response.text


def test_cancel_stops_between_sentences(engine):
    cancel = threading.Event()
    chunks = []
    for chunk in engine.synthesize(SENTENCES, None, 1.0, cancel):
        chunks.append(chunk)
        cancel.set()
    assert len(chunks) == 1


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"input": "a" * 4097}, "input"),
        ({"speed": 4.5}, "speed"),
        ({"speed": 0.1}, "speed"),
        ({"voice": "nobody"}, "voice"),
        ({"response_format": "ogg"}, "response_format"),
        ({"input": "   "}, "input"),
    ],
)
def test_rejections_are_400_naming_the_param(client, changes, param):
    request = {"model": "joe", "input": "Hello.", "voice": "alloy", **changes}
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(**request)
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_missing_voice_is_400(base_url):
    response = httpx.post(base_url + "/audio/speech", json={"model": "joe", "input": "Hi."})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_required_parameter"
