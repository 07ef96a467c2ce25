"""`stacklet test speech MODEL` and `stacklet test transcriptions MODEL [FILE]` through the openai client."""

from __future__ import annotations

import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

import typer

from cli.client import openai_client
from cli.options import ApiKeyOption, BaseUrlOption, JsonOption
from cli.smoke import Check, Report

SPEECH_TEXT = "Hello from stacklet. This sentence checks every audio format."
SAMPLE_NAME = "speech-sample.flac"
SAMPLE_WORDS = ("short", "test", "speech", "recognition")  # what the bundled sample says
FORMATS = ("pcm", "mp3", "opus", "aac", "flac", "wav")  # pcm first: it sets the expected duration
DURATION_TOLERANCE = 0.3  # Piper's noise makes every take a little different
VoiceOption = typer.Option("alloy", "--voice", help="Voice to speak with.")
OutOption = typer.Option(None, "--out", help="Directory to save each format in.")
FileArgument = typer.Argument(None, help="Audio file (default: a bundled sample).", exists=True, dir_okay=False)


def register(test_app: typer.Typer) -> None:
    test_app.command("speech")(test_speech)
    test_app.command("transcriptions")(test_transcriptions)


def test_speech(model: str = typer.Argument(..., help="Speech model to test."), base_url: BaseUrlOption = None,
                api_key: ApiKeyOption = None, as_json: JsonOption = False, voice: str = VoiceOption,
                out: Path | None = OutOption) -> None:
    """Speak in every response format and check each decodes with the right sample rate and length."""
    client = openai_client(base_url, api_key)
    report = Report(f"speech: {model}")
    expected: float | None = None
    for response_format in FORMATS:
        with report.check(f"speech {response_format}") as check:
            data = _speak(client, model, voice, response_format, check)
            seconds = _check_audio(data, response_format, expected)
            expected = expected or seconds
            check.detail = f"{seconds:.2f}s, {len(data)} bytes" + _save(data, out, response_format)
    report.finish(as_json)


def test_transcriptions(model: str = typer.Argument(..., help="Transcription model to test."),
                        file: Path | None = FileArgument,
                        base_url: BaseUrlOption = None, api_key: ApiKeyOption = None,
                        as_json: JsonOption = False) -> None:
    """Transcribe a file as json, verbose_json, srt and a stream, and show the text."""
    client = openai_client(base_url, api_key)
    name, data = (file.name, file.read_bytes()) if file else (SAMPLE_NAME, _sample())
    report = Report(f"transcriptions: {model}")
    with report.check("json") as check:
        text = client.audio.transcriptions.create(model=model, file=(name, data)).text
        _check_text(text, bundled=file is None)
        check.detail = text
    with report.check("verbose_json") as check:
        result = client.audio.transcriptions.create(model=model, file=(name, data), response_format="verbose_json",
                                                    timestamp_granularities=["word", "segment"])
        if not result.segments or not result.words or result.duration <= 0:
            raise ValueError("verbose_json lacks segments, words or duration")
        check.detail = f"{len(result.segments)} segments, {len(result.words)} words, {result.duration:.2f}s"
    with report.check("srt") as check:
        srt = client.audio.transcriptions.create(model=model, file=(name, data), response_format="srt")
        if not re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n", srt):
            raise ValueError(f"not SRT: {srt[:40]!r}")
        check.detail = f"{srt.count(' --> ')} cues"
    with report.check("stream") as check:
        start = time.perf_counter()
        events = []
        for event in client.audio.transcriptions.create(model=model, file=(name, data), stream=True):
            check.ttft_s = check.ttft_s or time.perf_counter() - start
            events.append(event)
        if not events or events[-1].type != "transcript.text.done":
            raise ValueError("the stream did not end with transcript.text.done")
        check.detail = f"{len(events) - 1} deltas"
    report.finish(as_json)


def _speak(client: Any, model: str, voice: str, response_format: str, check: Check) -> bytes:
    start = time.perf_counter()
    parts = []
    with client.audio.speech.with_streaming_response.create(model=model, voice=voice, input=SPEECH_TEXT,
                                                            response_format=response_format) as response:
        for part in response.iter_bytes():
            check.ttft_s = check.ttft_s or time.perf_counter() - start
            parts.append(part)
    return b"".join(parts)


def _check_audio(data: bytes, response_format: str, expected: float | None) -> float:
    """Decode it all; the rate must be OpenAI's 24 kHz (Opus decodes at 48 kHz) and the length plausible."""
    from runtime.media import SPEECH_RATE, probe_audio

    probe = probe_audio(data, response_format)
    rate = 48000 if response_format == "opus" else SPEECH_RATE
    if probe.sample_rate != rate or probe.channels != 1:
        raise ValueError(f"{probe.sample_rate} Hz, {probe.channels} channels; expected {rate} Hz mono")
    if probe.duration < 1.0:
        raise ValueError(f"only {probe.duration:.2f}s of audio")
    if expected and abs(probe.duration - expected) > DURATION_TOLERANCE * expected:
        raise ValueError(f"{probe.duration:.2f}s, but pcm was {expected:.2f}s")
    return probe.duration


def _save(data: bytes, out: Path | None, response_format: str) -> str:
    if out is None:
        return ""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"speech.{response_format}"
    path.write_bytes(data)
    return f", saved {path}"


def _sample() -> bytes:
    return resources.files("cli").joinpath("data", SAMPLE_NAME).read_bytes()


def _check_text(text: str, bundled: bool) -> None:
    words = set(re.findall(r"[a-z]+", text.lower()))
    if not words:
        raise ValueError("empty transcript")
    missing = [w for w in SAMPLE_WORDS if w not in words] if bundled else []
    if len(missing) > 1:
        raise ValueError(f"expected the words {', '.join(SAMPLE_WORDS)}; got {text!r}")
