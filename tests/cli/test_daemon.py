"""`stacklet serve -d / status / ps / logs / stop` as real processes, with fake-engine models."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from serverproc import free_port

from cli.client import local_openai_target
from runtime.config import Settings
from runtime.server import state
from runtime.store.registry import ModelRecord, Registry

WAIT_S = 60  # generous upper bound for "eventually", never a timing assertion


def stacklet(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                            env=os.environ.copy(), timeout=WAIT_S * 2)
    if check and result.returncode != 0:
        raise AssertionError(f"stacklet {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result




def gone(pid: int) -> bool:
    return state.process_start_ticks(pid) is None  # no such process, or a zombie


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while not gone(pid):
        assert time.monotonic() < deadline, f"pid {pid} is still running"
        time.sleep(0.05)


def register_fake(*names: str) -> None:
    registry = Registry(Settings.load().paths.ensure())
    for name in names:
        registry.add(ModelRecord(name, "llm", {"type": "fake"}, [], {"fake_delay": 0.02}, engine="fake"))
    registry.close()


@pytest.fixture
def server() -> Any:
    """A background server for the test; stopped (and checked stopped) afterwards."""
    register_fake("alpha", "bravo")
    port = free_port()
    started = stacklet("serve", "-d", "--port", str(port), "--max-loaded-models", "1")
    yield port, started
    stacklet("stop")


def chat(client: openai.OpenAI, model: str) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    return reply.choices[0].message.content or ""


def test_serve_detached_status_ps_logs_stop(server: Any) -> None:
    port, started = server
    assert f"http://127.0.0.1:{port}/v1" in started.stdout
    assert "$STACKLET_API_KEY" in started.stdout
    base_url, key = local_openai_target()
    assert key not in started.stdout + started.stderr
    assert base_url == f"http://127.0.0.1:{port}/v1"

    report = json.loads(stacklet("status", "--json").stdout)
    assert report["running"] and report["healthy"] and report["base_url"] == base_url
    again = stacklet("serve", "-d", "--port", str(port))
    assert f"already running at http://127.0.0.1:{port} (pid {report['pid']})" in again.stdout

    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=WAIT_S)
    assert len(chat(client, "alpha").split()) == 2
    alpha = json.loads(stacklet("ps", "--json").stdout)
    assert [w["model"] for w in alpha] == ["alpha"]
    chat(client, "bravo")  # --max-loaded-models 1: alpha is evicted
    bravo = json.loads(stacklet("ps", "--json").stdout)
    assert [w["model"] for w in bravo] == ["bravo"]
    wait_gone(alpha[0]["pid"])
    assert "bravo" in stacklet("ps").stdout

    stream = client.chat.completions.create(model="bravo", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=1000, stream=True)
    chunks = iter(stream)
    next(chunks)
    killed = bravo[0]["pid"]
    os.kill(killed, signal.SIGKILL)  # the worker dies mid-stream: an error event, not a hang
    with pytest.raises(openai.APIError, match="worker stopped unexpectedly"):
        list(chunks)
    chat(client, "bravo")  # restarted on the next request
    bravo = json.loads(stacklet("ps", "--json").stdout)
    assert bravo[0]["pid"] != killed

    listed = json.loads(stacklet("test", "models", "--json").stdout)
    assert listed["ok"] and listed["checks"][0]["extra"]["models"] == ["alpha", "bravo"]
    assert "loaded bravo" in stacklet("logs", "-n", "200").stdout

    assert "Stopped" in stacklet("stop").stdout
    wait_gone(report["pid"])
    wait_gone(bravo[0]["pid"])
    assert stacklet("status", check=False).returncode == 7
    assert "No stacklet server is running" in stacklet("stop").stdout


def test_busy_port_is_a_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args in (("serve", "-d"), ("serve",)):
            result = stacklet(*args, "--port", str(port), check=False)
            assert result.returncode != 0
            assert result.stderr.strip() == f"error: Port {port} on 127.0.0.1 is already in use. Choose another " \
                                            "with --port, or stop what is using it."
    assert state.read(Settings.load().paths) is None


def test_stale_record_never_signals_another_process() -> None:
    paths = Settings.load().paths.ensure()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = state.ServerInfo(other.pid, "127.0.0.1", free_port(), time.time(), start_ticks=1)
        state.state_path(paths).write_text(json.dumps(stale.__dict__))
        assert stacklet("status", check=False).returncode == 7
        state.state_path(paths).write_text(json.dumps(stale.__dict__))
        assert "stale record" in stacklet("stop").stdout
        assert other.poll() is None
        assert state.read(paths) is None
    finally:
        other.kill()
        other.wait()


def test_foreground_serve_publishes_and_retracts_its_record() -> None:
    register_fake("alpha")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port), "--no-auth"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        chat(client, "alpha")
        info = state.read(Settings.load().paths)
        assert info is not None and info.pid == process.pid
        worker_pid = json.loads(stacklet("ps", "--json").stdout)[0]["pid"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT_S) == 0
        wait_gone(worker_pid)
        assert not Path(state.state_path(Settings.load().paths)).exists()
    finally:
        process.kill()
        process.wait()
