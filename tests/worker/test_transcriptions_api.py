"""/v1/audio/transcriptions and /translations on the real Whisper tiny.en model.

The test clip was made once with espeak-ng (tests/data/quick-brown-fox.wav): "The quick brown fox
jumps over the lazy dog. Then it ran into the forest."
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from apps import audio_app

from runtime import media
from runtime.engines.base import TranscriptionParams
from runtime.engines.speech import PiperEngine
from runtime.engines.transcribe import WhisperEngine
from runtime.errors import InvalidRequestError
from runtime.spec import ModelSpec, WorkerLimits

FOX = Path(__file__).parent.parent / "data" / "quick-brown-fox.wav"
FOX_DURATION = 5.47


@pytest.fixture(scope="module")
def engine(whisper_dir: Path) -> Iterator[WhisperEngine]:
    loaded = WhisperEngine(ModelSpec("tiny.en", "transcription", "whisper", {"model": whisper_dir}))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def base_url(engine: WhisperEngine, live_server: Any) -> str:
    return live_server(audio_app(engine)) + "/v1"


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def assert_fox(text: str) -> None:
    """Robot voice, tiny model, lossy codecs: allow one miss."""
    heard = [word for word in ("quick", "brown", "fox", "lazy", "dog", "forest") if word in words_of(text)]
    assert len(heard) >= 5, text


def transcode(data: bytes, container: str, codec: str, rate: int) -> bytes:
    """Re-encode a clip with PyAV into another upload format."""
    import av

    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as source, av.open(out, "w", format=container) as target:
        stream = target.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        for frame in [*source.decode(audio=0), None]:
            for resampled in resampler.resample(frame):
                target.mux(stream.encode(resampled))
        target.mux(stream.encode(None))
    return out.getvalue()


def test_json_is_the_default_with_duration_usage(client):
    result = client.audio.transcriptions.create(model="tiny.en", file=FOX)
    assert_fox(result.text)
    assert result.usage.type == "duration" and result.usage.seconds == 6
    assert result.logprobs is None


@pytest.mark.parametrize(
    ("container", "codec", "rate", "name"),
    [
        ("mp3", "libmp3lame", 22050, "clip.mp3"),
        ("ipod", "aac", 16000, "clip.m4a"),
        ("ogg", "libopus", 48000, "clip.ogg"),
        ("webm", "libopus", 48000, "clip.webm"),
        ("flac", "flac", 16000, "clip.flac"),
    ],
)
def test_common_upload_formats_transcribe(client, container, codec, rate, name):
    data = transcode(FOX.read_bytes(), container, codec, rate)
    assert abs(len(media.decode_audio(data)) / 16000 - FOX_DURATION) < 0.2
    assert_fox(client.audio.transcriptions.create(model="tiny.en", file=(name, data)).text)


def test_text_srt_and_vtt_are_plain_text(client):
    raw = client.audio.transcriptions.with_raw_response.create(model="tiny.en", file=FOX, response_format="text")
    assert raw.headers["content-type"].startswith("text/plain")
    text = raw.parse()
    assert text.endswith("\n") and not text.startswith('"')
    assert_fox(text)
    srt = client.audio.transcriptions.create(model="tiny.en", file=FOX, response_format="srt")
    assert re.match(r"1\n00:00:00,000 --> 00:00:0\d,\d{3}\n\S.*fox.*\n", srt, re.IGNORECASE), srt
    vtt = client.audio.transcriptions.create(model="tiny.en", file=FOX, response_format="vtt")
    assert re.match(r"WEBVTT\n\n00:00:00\.000 --> 00:00:0\d\.\d{3}\n\S.*fox.*\n", vtt, re.IGNORECASE), vtt


def test_verbose_json_with_words_and_segments(client):
    result = client.audio.transcriptions.create(model="tiny.en", file=FOX, response_format="verbose_json",
                                                timestamp_granularities=["word", "segment"])
    data = result.model_dump()
    assert data["task"] == "transcribe" and data["language"] == "english"
    assert abs(data["duration"] - FOX_DURATION) < 0.05
    assert_fox(data["text"])
    segment = data["segments"][0]
    assert set(segment) == {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                            "compression_ratio", "no_speech_prob"}
    assert segment["id"] == 0 and segment["start"] == 0.0 and segment["tokens"]
    words = data["words"]
    assert [w["word"] for w in words[:3]] == ["The", "quick", "brown"]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(w["end"] >= w["start"] for w in words)
    assert words[-1]["end"] <= FOX_DURATION + 0.1


def test_verbose_json_has_segments_only_by_default(client):
    result = client.audio.transcriptions.create(model="tiny.en", file=FOX, response_format="verbose_json")
    data = result.model_dump(exclude_unset=True)
    assert "segments" in data and "words" not in data


def test_logprobs_on_request(client):
    result = client.audio.transcriptions.create(model="tiny.en", file=FOX, include=["logprobs"])
    logprobs = result.logprobs
    assert logprobs and all(p.logprob <= 0 for p in logprobs)
    assert "".join(p.token for p in logprobs).strip() == result.text
    assert logprobs[0].bytes == list(logprobs[0].token.encode())


def test_stream_sends_text_deltas_then_done(client):
    events = list(client.audio.transcriptions.create(model="tiny.en", file=FOX, stream=True,
                                                     include=["logprobs"]))
    assert [e.type for e in events] == ["transcript.text.delta"] * (len(events) - 1) + ["transcript.text.done"]
    done = events[-1]
    assert "".join(e.delta for e in events[:-1]) == done.text
    assert_fox(done.text)
    assert done.usage.type == "tokens" and done.usage.output_tokens > 0
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    assert events[0].logprobs and done.logprobs


def test_stream_false_as_sent_by_openai_node_is_json(base_url):
    files = {"file": ("fox.wav", FOX.read_bytes(), "audio/wav")}
    response = httpx.post(base_url + "/audio/transcriptions", files=files,
                          data={"model": "tiny.en", "stream": "false", "timestamp_granularities[]": "word",
                                "response_format": "verbose_json", "chunking_strategy": "auto"}, timeout=120)
    assert response.status_code == 200, response.text
    assert_fox(response.json()["text"])
    assert response.json()["words"]


def test_null_form_fields_are_unset_as_form_data_clients_send_them(base_url):
    files = {"file": ("fox.wav", FOX.read_bytes(), "audio/wav")}  # FormData.append("stream", null) sends "null"
    response = httpx.post(base_url + "/audio/transcriptions", files=files,
                          data={"model": "tiny.en", "stream": "null", "language": "null", "prompt": "null"},
                          timeout=120)
    assert response.status_code == 200, response.text
    assert_fox(response.json()["text"])  # json, the default format: not a stream


def test_prompt_language_and_temperature_are_accepted(client):
    result = client.audio.transcriptions.create(model="tiny.en", file=FOX, language="en", temperature=0.2,
                                                prompt="A pangram about a fox.")
    assert "fox" in words_of(result.text)


PARAGRAPH = (
    "The library opens at nine in the morning. Children come to read picture books with their parents. "
    "At noon the reading room fills with students who prepare for their exams. In the afternoon an old man "
    "plays chess by the window. He has played there every day for twenty years. When the sun goes down the "
    "lights come on, and the librarian checks the shelves one last time. Then she locks the door and walks "
    "home along the river. Tomorrow the library will open again, and the same people will return."
)


@pytest.fixture(scope="module")
def voice(piper_voice: Path) -> Iterator[PiperEngine]:
    loaded = PiperEngine(ModelSpec("joe", "speech", "piper", {"model": piper_voice,
                                                               "config": Path(f"{piper_voice}.json")}))
    yield loaded
    loaded.close()


def speak(voice: PiperEngine, text: str, speed: float = 1.0) -> np.ndarray:
    """Piper speech (a voice other than espeak's robot) as Whisper input."""
    chunks = list(voice.synthesize(text, "alloy", speed, threading.Event()))
    wav = media.encode_audio(np.concatenate([c.samples for c in chunks]), chunks[0].sample_rate, "wav")
    return media.decode_audio(wav)


def test_round_trip_speech_to_text(engine, voice):
    _, segments = engine.transcribe(speak(voice, "The weather is sunny today. We will go to the beach."),
                                    TranscriptionParams(), threading.Event())
    words = words_of("".join(s.text for s in segments))
    for word in ("weather", "sunny", "today", "beach"):
        assert word in words, words


def test_long_audio_is_decoded_in_windows_and_cancel_stops_between_segments(engine, voice):
    long_audio = speak(voice, PARAGRAPH, speed=0.7)  # about 37 s: more than one 30 s window
    info, segments = engine.transcribe(long_audio, TranscriptionParams(), threading.Event())
    segments = list(segments)
    assert info.duration > 31
    assert max(s.seek for s in segments) > 0 and segments[-1].end > 30
    assert [s.id for s in segments] == list(range(len(segments)))
    heard = words_of("".join(s.text for s in segments))
    assert {"library", "chess", "river", "return"} <= set(heard), heard
    cancel = threading.Event()
    _, stream = engine.transcribe(long_audio, TranscriptionParams(), cancel)
    first = next(stream)
    cancel.set()
    assert first.id == 0 and list(stream) == []


def test_translation_on_an_english_only_model_is_400(client, engine):
    assert "translations" not in engine.capabilities
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.translations.create(model="tiny.en", file=FOX)
    assert "English-only" in caught.value.body["message"]
    with pytest.raises(InvalidRequestError, match="English-only"):
        engine.transcribe(np.zeros(16000, np.float32), TranscriptionParams(task="translate"), threading.Event())


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (("empty.wav", b""), "empty"),
        (("noise.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4), "could not be decoded"),
        (("picture.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100), "Invalid file format"),
        (("notes.txt", b"just some text, not audio"), "Invalid file format"),
    ],
)
def test_bad_uploads_are_400_on_file(client, upload, message):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="tiny.en", file=upload)
    assert caught.value.body["param"] == "file"
    assert message in caught.value.body["message"]


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"response_format": "diarized_json"}, "response_format", "invalid_value"),
        ({"language": "xx"}, "language", "invalid_value"),
        ({"temperature": "2"}, "temperature", "invalid_value"),
        ({"timestamp_granularities[]": "sentence"}, "timestamp_granularities[0]", "invalid_value"),
    ],
)
def test_bad_fields_are_400(base_url, fields, param, code):
    files = {"file": ("fox.wav", FOX.read_bytes(), "audio/wav")}
    response = httpx.post(base_url + "/audio/transcriptions", files=files, data={"model": "tiny.en", **fields})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)


def test_missing_file_and_text_file_field_are_400(base_url):
    missing = httpx.post(base_url + "/audio/transcriptions", files={"model": (None, "tiny.en")})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_required_parameter"
    as_text = httpx.post(base_url + "/audio/transcriptions", files={"model": (None, "tiny.en"), "file": (None, "x")})
    assert as_text.status_code == 400 and as_text.json()["error"]["param"] == "file"


def test_oversize_upload_is_413(engine, live_server):
    small = live_server(audio_app(engine, WorkerLimits(50_000))) + "/v1"
    response = httpx.post(small + "/audio/transcriptions", files={"file": ("fox.wav", FOX.read_bytes())},
                          data={"model": "tiny.en"})
    assert response.status_code == 413
    assert json.loads(response.text)["error"]["param"] == "file"
