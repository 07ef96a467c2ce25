"""The worker process on its own: readiness, /status, load failures, and exiting with its parent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from runtime.engines.fake import FakeEngine
from runtime.options import EngineOptions
from runtime.scheduler.process import socket_dir
from runtime.server.state import process_start_ticks
from runtime.spec import ModelSpec

WAIT_S = 60


def spec_json(kind: str = "llm", **metadata: object) -> str:
    return json.dumps(ModelSpec("m", kind, "fake", {}, dict(metadata), EngineOptions(parallel=2)).to_json())


def worker_command(spec: str, sock: Path) -> list[str]:
    return [sys.executable, "-m", "runtime.worker", "--spec-json", spec, "--socket", str(sock)]


def status(sock: Path) -> dict:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://worker") as client:
        return client.get("/status", timeout=2).json()


def wait_for_status(sock: Path) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            return status(sock)
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("the worker never answered /status")


@pytest.fixture
def sock(stacklet_home: Path) -> Path:
    return socket_dir(stacklet_home / "state") / "test.sock"


@pytest.mark.parametrize(("kind", "capabilities"), [
    ("llm", ["chat", "completions", "detokenize", "embeddings", "tokenize"]),
    ("image", ["image_edits", "images"]),
    ("transcription", ["transcriptions", "translations"]),
])
def test_status_reports_engine_and_counters(sock: Path, kind: str, capabilities: list[str]) -> None:
    process = subprocess.Popen(worker_command(spec_json(kind), sock))
    try:
        answer = wait_for_status(sock)
        assert answer["pid"] == process.pid
        assert answer["capabilities"] == capabilities
        assert answer["info"]["engine"] == "fake" and answer["info"]["options"] == {"parallel": 2}
        assert answer["active"] == 0 and answer["completion_tokens"] == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) in (0, -signal.SIGTERM)  # uvicorn re-raises it after shutdown
        assert not sock.exists()
    finally:
        process.kill()
        process.wait()


def test_load_failure_exits_with_the_reason(sock: Path) -> None:
    result = subprocess.run(worker_command(spec_json(fake_load_error="bad weights"), sock),
                            capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "error: bad weights"


def test_worker_exits_when_its_parent_dies(sock: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    parent_code = (
        "import subprocess, sys, time\n"
        f"worker = subprocess.Popen({worker_command(spec_json(), sock)!r})\n"
        f"open({str(pid_file)!r}, 'w').write(str(worker.pid))\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    try:
        wait_for_status(sock)
        worker_pid = int(pid_file.read_text())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + WAIT_S
        while process_start_ticks(worker_pid) is not None:
            assert time.monotonic() < deadline, "the orphaned worker kept running"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()


def test_fake_engine_is_deterministic_and_honours_limits() -> None:
    import threading

    from runtime.engines.base import SamplingParams, Usage

    engine = FakeEngine(ModelSpec("m", "llm", "fake", {}))
    prompt = engine.tokenize("hello")
    assert engine.detokenize(prompt) == "hello"

    def run(params: SamplingParams, n: int = 1) -> list:
        return list(engine.generate(prompt, params, n, Usage(), threading.Event()))

    first = run(SamplingParams(max_tokens=5, seed=7), n=2)
    assert first == run(SamplingParams(max_tokens=5, seed=7), n=2)
    assert [d.finish_reason for d in first if d.finish_reason] == ["length", "length"]
    assert sum(1 for d in first if d.index == 0 and d.text) == 5
    word = first[0].text.strip()
    stopped = run(SamplingParams(max_tokens=5, seed=7, stop=[word]))
    assert stopped[-1].finish_reason == "stop" and word not in "".join(d.text for d in stopped)
    cancelled = threading.Event()
    cancelled.set()
    assert list(engine.generate(prompt, SamplingParams(max_tokens=5), 1, Usage(), cancelled)) == []
    vectors = engine.embed([prompt, prompt], threading.Event())
    assert vectors[0] == vectors[1] and abs(sum(v * v for v in vectors[0]) - 1) < 1e-9
