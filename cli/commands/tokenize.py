"""`stacklet tokenize MODEL TEXT`: a model's token ids for a text, through the running server."""

from __future__ import annotations

import sys

import typer

from cli import output
from cli.options import JsonOption
from runtime.errors import InvalidRequestError


def register(app: typer.Typer) -> None:
    app.command()(tokenize)


def tokenize(
    model: str = typer.Argument(..., help="A chat, embedding or rerank model (its name in `stacklet list`)."),
    text: str | None = typer.Argument(None, help="The text (read from stdin when omitted)."),
    add_special: bool = typer.Option(False, "--add-special", help="Add the model's BOS and similar tokens."),
    as_json: JsonOption = False,
) -> None:
    """Show how MODEL splits TEXT into tokens: one line per token (id and piece), then the count.

    --json prints {"tokens": [{"id", "piece"}, ...], "count"}; a piece that is part of a character is its
    list of byte values.
    """
    from cli.client import ServerClient
    from runtime.config import Settings

    if text is None:
        if sys.stdin.isatty():
            raise InvalidRequestError("No text given. Pass it as an argument or pipe it in.")
        text = sys.stdin.read()
    body = {"model": model, "content": text, "add_special": add_special, "with_pieces": True}
    with ServerClient(Settings.load().paths) as client:
        tokens = client.post("/v1/tokenize", body)["tokens"]
    if as_json:
        output.print_json({"tokens": tokens, "count": len(tokens)})
        return
    for token in tokens:
        output.console.print(f"{token['id']:>8}  {token['piece']!r}", highlight=False)
    output.console.print(f"{len(tokens)} tokens", style="dim", highlight=False)
