"""`stacklet chat MODEL [PROMPT]`: one answer, or an interactive chat with history (like `ollama run`)."""

from __future__ import annotations

import base64
import contextlib
import mimetypes
import sys
from pathlib import Path
from typing import Any

import typer

from cli import output
from cli.client import openai_client
from runtime.errors import InvalidRequestError, ServerNotRunningError, StackletError

EXIT_WORDS = ("/bye", "/exit", "/quit")
HELP = "Type a message. /bye or Ctrl-D exits, Ctrl-C stops an answer."
IMAGE_OPTION = typer.Option(None, "--image", help="An image to ask about, sent with the first message (repeatable; "
                            "the model must take images).")


def register(app: typer.Typer) -> None:
    app.command()(chat)


def chat(
    model: str = typer.Argument(..., help="Chat model (its name in `stacklet list`)."),
    prompt: str | None = typer.Argument(None, help="Ask once and exit (also read from stdin when piped)."),
    system: str | None = typer.Option(None, "--system", help="System prompt."),
    temperature: float | None = typer.Option(None, "--temperature", min=0, max=2, help="Sampling temperature."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for repeatable answers."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="Longest answer in tokens."),
    image: list[Path] = IMAGE_OPTION,
) -> None:
    """Chat with a model through the background server (started if none is running)."""
    history: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    images = [image_part(path) for path in image or []]
    options = {k: v for k, v in {"temperature": temperature, "seed": seed, "max_tokens": max_tokens}.items()
               if v is not None}
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    if prompt is not None and not prompt.strip():
        raise InvalidRequestError("The prompt is empty. Pass one, or run `stacklet chat MODEL` in a terminal "
                                  "to chat interactively.")
    client = _client()
    if prompt is not None:
        _answer(client, model, [*history, user_message(prompt, images)], options)
        return
    _repl(client, model, history, options, images)


def image_part(path: Path) -> dict[str, Any]:
    """A chat `image_url` part holding the file as a data URL."""
    media_type = mimetypes.guess_type(path.name)[0] or ""
    if not media_type.startswith("image/"):
        raise InvalidRequestError(f"{path} is not an image file (.png, .jpg, .webp or .gif).")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequestError(f"Cannot read {path}: {exc.strerror}.") from None
    url = f"data:{media_type};base64,{base64.b64encode(data).decode()}"
    return {"type": "image_url", "image_url": {"url": url}}


def user_message(text: str, images: list[dict[str, Any]]) -> dict[str, Any]:
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, *images]}


def _client() -> Any:
    try:
        return openai_client()
    except ServerNotRunningError:
        from cli.commands.server import start_background

        output.err_console.print("No server is running; starting one in the background.", style="dim")
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the answer
            start_background({})
        return openai_client()


def _repl(client: Any, model: str, history: list[dict[str, Any]], options: dict[str, Any],
          images: list[dict[str, Any]]) -> None:
    output.console.print(HELP, style="dim", highlight=False)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            print("\nUse Ctrl-D or /bye to exit.")
            continue
        if line.strip() in EXIT_WORDS:
            return
        if not line.strip():
            continue
        history.append(user_message(line, images))
        try:
            reply = _answer(client, model, history, options)
        except KeyboardInterrupt:
            print()
            history.pop()
            continue
        except StackletError as exc:
            output.error(exc.message)
            history.pop()
            continue
        images = []  # they are in the history now
        history.append({"role": "assistant", "content": reply})


def _answer(client: Any, model: str, messages: list[dict[str, Any]], options: dict[str, Any]) -> str:
    """Stream one answer to stdout; returns its text."""
    import openai

    parts: list[str] = []
    try:
        stream = client.chat.completions.create(model=model, messages=messages, stream=True, **options)
        for chunk in stream:
            for choice in chunk.choices:
                reasoning = (choice.delta.model_extra or {}).get("reasoning_content")
                if reasoning:
                    output.console.print(reasoning, style="dim", end="", highlight=False, markup=False)
                if choice.delta.content:
                    parts.append(choice.delta.content)
                    sys.stdout.write(choice.delta.content)
                    sys.stdout.flush()
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        raise StackletError(str(body.get("message") or exc.message)) from None
    except openai.APIConnectionError:
        raise ServerNotRunningError("Lost the connection to the server. Check `stacklet status`.") from None
    sys.stdout.write("\n")
    return "".join(parts)
