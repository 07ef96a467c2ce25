"""`stacklet keys ...`: API keys for the server (shown once, stored hashed)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from cli import output
from cli.options import JsonOption
from cli.output import say

KEYS_HELP = """Create, list and revoke API keys for the server.

An inference key serves the OpenAI routes (/v1-openai/..., their /v1 aliases) and lists models; an admin
key (`keys create --admin`) also pulls, deletes, loads, unloads and configures models through /v1/models."""
keys_app = typer.Typer(help=KEYS_HELP, no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _store() -> Any:
    from runtime.config import Settings
    from runtime.store.keys import KeyStore

    return KeyStore(Settings.load().paths)


@keys_app.command("create")
def create(
    name: Annotated[str | None, typer.Option("--name", help="A name to revoke it by later.")] = None,
    expires: Annotated[float | None, typer.Option("--expires", help="Days until the key stops working.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin key, which also manages models.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it once. Keys are inference keys unless --admin.

    With --json: {key, name, prefix, created, last_used, expires, scope}."""
    from runtime.store.keys import ADMIN, INFERENCE

    store = _store()
    try:
        key, record = store.create(name, expires, ADMIN if admin else INFERENCE)
    finally:
        store.close()
    if as_json:
        output.print_json({"key": key, **record.to_dict()})
        return
    say(key)
    output.err_console.print(
        f"{record.scope.capitalize()} key '{record.name}' created. Copy it now: it is not shown again. "
        "Use it as `Authorization: Bearer <key>` or export STACKLET_API_KEY.",
        highlight=False,
    )


@keys_app.command("list")
def list_keys(as_json: JsonOption = False) -> None:
    """List keys (names, scopes and prefixes; never the keys themselves).

    With --json: a list of {name, prefix, created, last_used, expires, scope}."""
    store = _store()
    try:
        records = store.list()
    finally:
        store.close()
    if as_json:
        output.print_json([r.to_dict() for r in records])
        return
    rows = [[r.name, r.scope, f"{r.prefix}...", _when(r.created), _when(r.last_used), _when(r.expires)]
            for r in records]
    output.table(["name", "scope", "prefix", "created", "last used", "expires"], rows)


@keys_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The key's name (see `stacklet keys list`).")]) -> None:
    """Revoke a key; requests using it fail from now on."""
    store = _store()
    try:
        store.revoke(name)
    finally:
        store.close()
    output.console.print(f"Revoked key '{name}'.", highlight=False)


def _when(timestamp: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "-"
