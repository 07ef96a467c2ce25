"""`stacklet test speech` and `stacklet test transcriptions` against real engines on loopback servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps import audio_app
from typer.testing import CliRunner

from cli.app import app as cli_app
from runtime.engines.speech import PiperEngine
from runtime.engines.transcribe import WhisperEngine
from runtime.spec import ModelSpec

FOX = Path(__file__).parent.parent / "data" / "quick-brown-fox.wav"


def serve(engine: Any, live_server: Any) -> str:
    return live_server(audio_app(engine)) + "/v1"


@pytest.fixture(scope="module")
def speech_url(piper_voice: Path, live_server: Any) -> Iterator[str]:
    engine = PiperEngine(ModelSpec("joe", "speech", "piper", {"model": piper_voice,
                                                              "config": Path(f"{piper_voice}.json")}))
    yield serve(engine, live_server)
    engine.close()


@pytest.fixture(scope="module")
def transcription_url(whisper_dir: Path, live_server: Any) -> Iterator[str]:
    engine = WhisperEngine(ModelSpec("tiny.en", "transcription", "whisper", {"model": whisper_dir}))
    yield serve(engine, live_server)
    engine.close()


def run(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli_app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_speech_checks_every_format(speech_url, tmp_path):
    code, report = run("test", "speech", "joe", "--base-url", speech_url, "--out", str(tmp_path))
    assert code == 0, report
    assert [c["name"] for c in report["checks"]] == [f"speech {f}" for f in ("pcm", "mp3", "opus", "aac", "flac",
                                                                               "wav")]
    assert all(c["ok"] and c["ttft_s"] is not None for c in report["checks"])
    assert (tmp_path / "speech.opus").read_bytes()[:4] == b"OggS"


def test_speech_with_an_unknown_voice_fails(speech_url):
    code, report = run("test", "speech", "joe", "--base-url", speech_url, "--voice", "nobody")
    assert code == 1
    assert not any(c["ok"] for c in report["checks"])
    assert "Invalid value: 'nobody'" in report["checks"][0]["detail"]


def test_transcriptions_of_the_bundled_sample(transcription_url):
    code, report = run("test", "transcriptions", "tiny.en", "--base-url", transcription_url)
    assert code == 0, report
    assert [c["name"] for c in report["checks"]] == ["json", "verbose_json", "srt", "stream"]
    assert "speech recognition" in report["checks"][0]["detail"].lower()


def test_transcriptions_of_a_given_file(transcription_url):
    code, report = run("test", "transcriptions", "tiny.en", str(FOX), "--base-url", transcription_url)
    assert code == 0, report
    assert "fox" in report["checks"][0]["detail"].lower()
