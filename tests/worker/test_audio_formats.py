"""runtime.media codecs and the /audio wire formats, without model weights (the fake engine only
for the translation plumbing that tiny.en, being English-only, cannot reach)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from apps import audio_app
from fastapi.testclient import TestClient

from runtime import media
from runtime.engines.base import TranscriptSegment
from runtime.engines.fake import FakeEngine
from runtime.errors import InvalidRequestError
from runtime.protocol import audio as wire
from runtime.spec import ModelSpec

FOX = Path(__file__).parent.parent / "data" / "quick-brown-fox.wav"
RATE = 22050


def tone(seconds: float, rate: int = RATE) -> np.ndarray:
    times = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * times) * 12000).astype(np.int16)


@pytest.mark.parametrize("response_format", media.SPEECH_FORMATS)
def test_incremental_encoding_streams_and_decodes_at_24khz(response_format):
    samples = tone(3.0)
    encoder = media.AudioEncoder(response_format, RATE)
    parts = [encoder.encode(samples[i:i + RATE // 2]) for i in range(0, len(samples), RATE // 2)]
    parts.append(encoder.finish())
    assert sum(1 for p in parts[:-1] if p) >= 4  # bytes come out while input still goes in
    probe = media.probe_audio(b"".join(parts), response_format)
    assert probe.sample_rate == (48000 if response_format == "opus" else 24000)
    assert probe.channels == 1
    assert abs(probe.duration - 3.0) < 0.1


def test_pcm_is_headerless_s16le_resampled_to_24khz():
    pcm = media.encode_audio(tone(2.0), RATE, "pcm")
    assert abs(len(pcm) - 2 * 24000 * 2) <= 2 * 64
    values = np.frombuffer(pcm, "<i2")
    assert 11000 < np.abs(values).max() < 12500  # the tone's amplitude survives


def test_wav_streams_with_unknown_length_and_still_decodes():
    wav = media.encode_audio(tone(1.0), RATE, "wav")
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert abs(len(media.decode_audio(wav)) - 16000) < 100


def test_decode_mixes_stereo_down_to_16khz_mono():
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=44100, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 44100 * 2), np.int16), format="s16", layout="stereo")
        frame.sample_rate = 44100
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    decoded = media.decode_audio(out.getvalue())
    assert decoded.dtype == np.float32 and decoded.ndim == 1 and abs(len(decoded) - 16000) < 50


@pytest.mark.parametrize(
    ("data", "container"),
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00", "flac"),
        (b"OggS\x00", "ogg"),
        (b"\x1a\x45\xdf\xa3\x00", "matroska"),
        (b"\x00\x00\x00\x20ftypM4A ", "mov"),
        (b"ID3\x04", "mp3"),
        (b"\xff\xfb\x90\x00", "mp3"),
        (b"\xff\xf1\x50\x80", "aac"),
        (b"#EXTM3U\nhttp://example.com/a.mp3", None),
        (b"\x89PNG\r\n\x1a\n", None),
    ],
)
def test_uploads_are_sniffed_by_their_bytes(data, container):
    assert media.sniff_container(data) == container


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"file 'http://example.com/x.wav'\n", "Invalid file format"),
        (b"RIFF\x24\x00\x00\x00WAVEdata", "could not be decoded"),
        (b"ID3" + b"\x00" * 64, "could not be decoded"),
    ],
)
def test_bad_audio_is_rejected(data, message):
    with pytest.raises(InvalidRequestError, match=message) as caught:
        media.decode_audio(data)
    assert caught.value.param == "file" and caught.value.status == 400


def segments() -> list[TranscriptSegment]:
    return [TranscriptSegment(0, 0.0, 2.5, " Hello there."), TranscriptSegment(1, 2.5, 3661.5, " Goodbye.")]


def test_srt_and_vtt_cues():
    assert wire.format_srt(segments()) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:02,500 --> 01:01:01,500\nGoodbye.\n\n"
    )
    assert wire.format_vtt(segments()) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n00:00:02.500 --> 01:01:01.500\nGoodbye.\n\n"
    )


def test_verbose_json_names_the_language_in_full():
    body = wire.transcription_verbose_json("transcribe", "de", 3661.5, segments(), ["segment"])
    assert body["language"] == "german" and body["text"] == "Hello there. Goodbye."
    assert body["usage"] == {"type": "duration", "seconds": 3662}
    assert "words" not in body and len(body["segments"]) == 2


def test_translation_plumbing_on_a_multilingual_engine():
    engine = FakeEngine(ModelSpec("fake-whisper", "transcription", "fake", {"model": Path("none")}))
    response = TestClient(audio_app(engine)).post("/v1/audio/translations",
                                                  files={"file": ("fox.wav", FOX.read_bytes())},
                                                  data={"model": "fake-whisper", "response_format": "verbose_json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "translate" and body["language"] == "english"
    assert body["text"] == "Hello from the fake engine. This is the second segment."
