"""Regenerate the shell completion scripts in completions/: `python -m cli.completions`.

Each script is what `_STACKLET_COMPLETE=source_<shell> stacklet` prints (Typer's click completion
machinery), so the committed files always match the installed command. tests/test_completions.py
fails when they are stale.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = {"bash": "stacklet.bash", "zsh": "_stacklet", "fish": "stacklet.fish"}
FOLDER = Path(__file__).resolve().parent.parent / "completions"
_RUN_APP = "from cli.app import app; app(prog_name='stacklet')"


def render(shell: str) -> str:
    env = {**os.environ, "_STACKLET_COMPLETE": f"source_{shell}"}
    result = subprocess.run([sys.executable, "-c", _RUN_APP], env=env, capture_output=True, text=True, check=True)
    return result.stdout


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for shell, filename in SCRIPTS.items():
        (FOLDER / filename).write_text(render(shell))
        print(FOLDER / filename)


if __name__ == "__main__":
    main()
