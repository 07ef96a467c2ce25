"""`stacklet test ...`: smoke-test each endpoint through the official openai client."""

from __future__ import annotations

import typer

test_app = typer.Typer(help="Smoke-test endpoints of stacklet (or any OpenAI-compatible server).",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from cli.commands import test_images

    test_images.register(test_app)
    app.add_typer(test_app, name="test")
