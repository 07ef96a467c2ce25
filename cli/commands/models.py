"""Local model management: pull, list, show, rm (works with no server running)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
