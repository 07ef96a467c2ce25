"""`stacklet pull/list/show/rm` as a user runs them: real processes, exit codes, --json keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import FakeHub, tiny_gguf


def stacklet(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, input=stdin)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add_repo("org/Tiny-GGUF", {"tiny-Q4_K_M.gguf": tiny_gguf(), "tiny-Q8_0.gguf": tiny_gguf(extra=b"8")})
        yield server


def test_pull_json_events(smollm_gguf: Path) -> None:
    result = stacklet("pull", str(smollm_gguf), "--name", "smol", "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events] == ["resolved", "file_start", "progress", "file_done", "verified",
                                            "registered"]
    resolved, registered = events[0], events[-1]
    assert resolved["model"] == "smol" and resolved["source"] == "local"
    assert resolved["files"] == [{"path": smollm_gguf.name, "role": "model", "size": smollm_gguf.stat().st_size}]
    assert len(events[4]["sha256"]) == 64
    assert registered == {"event": "registered", "model": "smol", "kind": "llm",
                          "size": smollm_gguf.stat().st_size, "files": 1}


def test_list_and_show_json(minilm_gguf: Path) -> None:
    assert stacklet("pull", str(minilm_gguf), "--name", "minilm", "--json").returncode == 0
    listed = json.loads(stacklet("list", "--json").stdout)
    assert [m["name"] for m in listed] == ["minilm"]
    assert set(listed[0]) >= {"name", "kind", "engine", "size", "source", "files", "metadata", "options", "created"}
    assert listed[0]["kind"] == "embedding"
    shown = json.loads(stacklet("show", "minilm", "--json").stdout)
    assert shown["metadata"]["pooling"] == "mean"
    assert Path(shown["files"][0]["local_path"]).is_file()


def test_show_prints_the_chat_template(smollm_gguf: Path) -> None:
    stacklet("pull", str(smollm_gguf), "--name", "smol", "--json")
    result = stacklet("show", "smol")
    assert result.returncode == 0
    assert "chat template" in result.stdout
    assert "<|im_start|>" in result.stdout


def test_human_pull_from_the_hub(hub: FakeHub) -> None:
    result = stacklet("pull", "org/Tiny-GGUF:Q8_0", env={"HF_ENDPOINT": hub.url})
    assert result.returncode == 0, result.stderr
    assert "Pulled Tiny (llm" in result.stdout
    assert "tiny-Q8_0.gguf" in stacklet("show", "Tiny").stdout


def test_pull_errors_are_one_line_with_exit_codes(hub: FakeHub) -> None:
    result = stacklet("pull", "org/Tiny-GGUF:Q6_K", "--json", env={"HF_ENDPOINT": hub.url})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Quant Q6_K is not in this repo. Available: Q4_K_M, Q8_0."
    ]
    event = json.loads(result.stdout.splitlines()[-1])
    assert event == {"event": "error", "message": "Quant Q6_K is not in this repo. Available: Q4_K_M, Q8_0.",
                     "type": "invalid_request_error", "code": "file_not_found"}
    missing = stacklet("pull", "org/Nope", env={"HF_ENDPOINT": hub.url})
    assert missing.returncode == 4
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "Traceback" not in missing.stderr


def test_show_unknown_model() -> None:
    result = stacklet("show", "nope")
    assert result.returncode == 4
    assert result.stderr.strip() == "error: The model `nope` does not exist or you do not have access to it."


def test_rm_needs_confirmation(smollm_gguf: Path) -> None:
    stacklet("pull", str(smollm_gguf), "--name", "smol", "--json")
    refused = stacklet("rm", "smol", stdin="")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert [m["name"] for m in json.loads(stacklet("list", "--json").stdout)] == ["smol"]
    removed = stacklet("rm", "smol", "--yes")
    assert removed.returncode == 0
    assert "Removed smol" in removed.stdout
    assert json.loads(stacklet("list", "--json").stdout) == []


def test_version() -> None:
    from importlib.metadata import version

    result = stacklet("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"stacklet {version('stacklet')}"
