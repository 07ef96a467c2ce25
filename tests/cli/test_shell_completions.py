"""The committed shell completions match what the Typer app generates, and they complete commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli import completions


@pytest.mark.parametrize("shell", sorted(completions.SCRIPTS))
def test_committed_completions_are_fresh(shell: str) -> None:
    committed = (completions.FOLDER / completions.SCRIPTS[shell]).read_text()
    assert committed == completions.render(shell), "stale: run `python -m cli.completions` and commit completions/"


def complete_bash(words: str) -> list[str]:
    env = {**os.environ, "_STACKLET_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split(" ")) - 1)}
    code = "from cli.app import app; app(prog_name='stacklet')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    return result.stdout.split()


def test_bash_completion_completes_commands_and_model_names(smollm_gguf: Path) -> None:
    assert complete_bash("stacklet pu") == ["pull"]
    from runtime.config import Settings
    from runtime.store.store import Store

    store = Store(Settings.load().paths)
    store.pull(str(smollm_gguf), name="smol-a")
    store.pull(str(smollm_gguf), name="other")
    store.close()
    assert complete_bash("stacklet show smo") == ["smol-a"]
    assert complete_bash("stacklet rm ") == ["other", "smol-a"]
