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


def test_a_pull_without_a_quant_says_why_it_chose_one(hub: FakeHub) -> None:
    result = stacklet("pull", "org/Tiny-GGUF", env={"HF_ENDPOINT": hub.url})
    assert result.returncode == 0, result.stderr
    reason = next(line for line in result.stdout.splitlines() if line.startswith("Q8_0: "))
    assert " KV cache (guessed: the GGUF header could not be read) fits " in reason  # tiny_gguf has no dims
    assert reason.endswith((" free RAM", " free VRAM"))


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


LONG_NAME = "SmolLM2-135M-Instruct-a-name-long-enough-that-a-table-would-cut-it-Q8_0"


@pytest.mark.parametrize("columns", ["40", "80"])
def test_list_in_a_pipe_never_cuts_names(hub: FakeHub, columns: str) -> None:
    assert stacklet("pull", "org/Tiny-GGUF:Q8_0", "--name", LONG_NAME, env={"HF_ENDPOINT": hub.url}).returncode == 0
    listed = stacklet("list", env={"COLUMNS": columns})
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "KIND", "SIZE", "DETAIL", "SOURCE", "PULLED"]
    assert row.startswith(LONG_NAME + "   llm")  # whole, in plain columns (awk-able)
    assert "hf.co/org/Tiny-GGUF:Q8_0" in row
    assert "…" not in listed.stdout


@pytest.mark.parametrize(("width", "rich"), [(200, True), (60, False)])
def test_a_terminal_gets_a_table_only_when_every_cell_fits(monkeypatch: pytest.MonkeyPatch, width: int,
                                                            rich: bool) -> None:
    import io

    from rich.console import Console

    from cli import output

    screen = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=screen, force_terminal=True, width=width, color_system=None))
    output.listing(["NAME", "SOURCE"], [[LONG_NAME, "hf.co/org/Tiny-GGUF:Q8_0"], ["b", None]])
    lines = screen.getvalue().splitlines()
    assert any(LONG_NAME in line for line in lines)
    assert "…" not in screen.getvalue()
    assert any(set(line) <= set("━─┃│╇┼ ") and line.strip() for line in lines) is rich  # rich's header rule
    if not rich:
        assert lines[1] == f"{LONG_NAME}   hf.co/org/Tiny-GGUF:Q8_0"
        assert lines[2] == "b"
