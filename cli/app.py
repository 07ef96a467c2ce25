"""The root Typer app. Import-light: commands import heavy modules inside their bodies."""

from __future__ import annotations

import os
import sys

import typer

from cli import output
from runtime.errors import StackletError

app = typer.Typer(
    name="stacklet",
    help="Pull models from Hugging Face and serve them through an OpenAI-compatible API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rich's markdown renderer alone costs ~0.15 s of start-up
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"stacklet {version('stacklet')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    pass


def _register() -> None:
    from cli.commands import bench, chat, demo, keys, models, open, routes, server, test, tokenize

    models.register(app)
    keys.register(app)
    server.register(app)
    test.register(app)
    chat.register(app)
    tokenize.register(app)
    demo.register(app)
    bench.register(app)
    open.register(app)
    routes.register(app)


_register()


def main() -> None:
    """Console entry point: StackletError -> one line on stderr and its exit code."""
    try:
        app()
    except StackletError as exc:
        if os.environ.get("STACKLET_DEBUG") == "1":
            raise
        output.error(exc.message)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        output.error("Interrupted.")
        sys.exit(130)
