"""`stacklet route ...` and `stacklet remote ...`: public model names over local models and remote upstreams.

Both edit the database directly (no server needed); a running server sees the change on its next request
(remotes' models on its next health check). `remote list` shows live health when a server runs.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli import output
from cli.options import JsonOption, TokenIdsOption
from cli.output import say

ROUTE_HELP = """Public model names that resolve to local models or models on remotes.

`stacklet route set gpt-4o smol` makes clients that ask for gpt-4o get smol; `stacklet route set chat
--target node-a:qwen --target node-b:qwen --fallback smol` spreads chat over two remotes, then falls back."""
REMOTE_HELP = """OpenAI-compatible upstreams (another stacklet, vLLM, llama-server, ...) that routes can target
as `remote:model`."""
route_app = typer.Typer(help=ROUTE_HELP, no_args_is_help=True)
remote_app = typer.Typer(help=REMOTE_HELP, no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(route_app, name="route")
    app.add_typer(remote_app, name="remote")


def _store() -> Any:
    from runtime.config import Settings
    from runtime.store.routes import RouteStore

    return RouteStore(Settings.load().paths.ensure())


@route_app.command("set")
def set_route(
    name: Annotated[str, typer.Argument(help="The model name clients ask for, e.g. gpt-4o.")],
    target: Annotated[str | None, typer.Argument(help="A local model or remote:model.")] = None,
    targets: Annotated[list[str] | None, typer.Option("--target", help="Another target (repeatable).")] = None,
    weights: Annotated[list[int] | None, typer.Option("--weight", help="The weight of each target, in order "
                                                      "(repeatable; default 1).")] = None,
    fallbacks: Annotated[list[str] | None, typer.Option("--fallback", help="Tried in order when every target "
                                                        "fails (repeatable).")] = None,
    token_ids: TokenIdsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create or replace a route. With --json: {name, targets: [{target, weight}], fallbacks, token_ids, created}."""
    from runtime.errors import InvalidRequestError
    from runtime.store.routes import Route, Target

    names = ([target] if target else []) + (targets or [])
    weights = weights or []
    if len(weights) > len(names):
        raise InvalidRequestError("More --weight values than targets. Give one weight per target, in order.")
    weights += [1] * (len(names) - len(weights))
    store = _store()
    try:
        route = store.set_route(Route(name, [Target(t, w) for t, w in zip(names, weights, strict=True)],
                                      fallbacks or [], token_ids and token_ids.strip().lower()))
    finally:
        store.close()
    if as_json:
        output.print_json(route.to_dict())
        return
    say(f"Route '{route.name}' -> {_targets(route)}.", markup=False)


@route_app.command("list")
def list_routes(as_json: JsonOption = False) -> None:
    """List routes. With --json: a list of {name, targets: [{target, weight}], fallbacks, token_ids, created}."""
    store = _store()
    try:
        routes = store.routes()
    finally:
        store.close()
    if as_json:
        output.print_json([r.to_dict() for r in routes])
        return
    if not routes:
        say("No routes. Add one with `stacklet route set NAME TARGET`.")
        return
    output.listing(["name", "targets", "fallbacks"],
                   [[r.name, _targets(r), ", ".join(r.fallbacks) or "-"] for r in routes])


@route_app.command("rm")
def remove_route(name: Annotated[str, typer.Argument(help="The route's name.")]) -> None:
    """Remove a route."""
    store = _store()
    try:
        store.remove_route(name)
    finally:
        store.close()
    say(f"Removed route '{name}'.", markup=False)


@remote_app.command("add")
def add_remote(
    name: Annotated[str, typer.Argument(help="A short name; routes target its models as NAME:model.")],
    url: Annotated[str, typer.Argument(help="Its OpenAI base URL, e.g. http://10.0.0.2:8000/v1.")],
    api_key_env: Annotated[str | None, typer.Option("--api-key-env", help="Read its API key from this "
                                                    "environment variable now.")] = None,
    api_key_file: Annotated[str | None, typer.Option("--api-key-file", help="Read its API key from this "
                                                     "file now.")] = None,
    models: Annotated[str | None, typer.Option("--models", help="Its models, comma-separated (default: "
                                               "discovered from its /models).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for its first byte, and "
                                           "between bytes, before failing over.")] = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Add a remote. Its key is stored in a private file and never shown again.

    With --json: {name, url, models, timeout, created, has_key}."""
    from runtime.store.routes import Remote, read_key

    key = read_key(env=api_key_env, file=api_key_file)
    listed = None if models is None else [m.strip() for m in models.split(",") if m.strip()]
    store = _store()
    try:
        remote = store.add_remote(Remote(name, url, listed, timeout), key)
    finally:
        store.close()
    if as_json:
        output.print_json(remote.to_dict())
        return
    say(f"Added remote '{remote.name}' at {remote.url}. Route to it with `stacklet route set NAME "
        f"{remote.name}:MODEL`.", markup=False)


@remote_app.command("list")
def list_remotes(as_json: JsonOption = False) -> None:
    """List remotes; with a running server, their health, latency, in-flight requests and models.

    With --json: a list of {name, url, models, timeout, has_key, ...}; from a running server also healthy,
    retry_in_s, failures, latency_s, last_error, in_flight, models_listed."""
    remotes = live_remotes()
    if remotes is None:
        store = _store()
        try:
            remotes = [r.to_dict() for r in store.remotes()]
        finally:
            store.close()
    if as_json:
        output.print_json(remotes)
        return
    if not remotes:
        say("No remotes. Add one with `stacklet remote add NAME URL`.")
        return
    output.listing(["name", "url", "health", "latency", "in flight", "models"], [remote_row(r) for r in remotes])


@remote_app.command("rm")
def remove_remote(name: Annotated[str, typer.Argument(help="The remote's name.")]) -> None:
    """Remove a remote and its stored key (routes that target it skip it)."""
    store = _store()
    try:
        store.remove_remote(name)
    finally:
        store.close()
    say(f"Removed remote '{name}'.", markup=False)


def live_remotes() -> list[dict[str, Any]] | None:
    """The running server's view of the remotes, or None when no server runs."""
    from cli.client import ServerClient
    from runtime.config import Settings
    from runtime.errors import ServerNotRunningError

    try:
        with ServerClient(Settings.load().paths) as client:
            return client.get("/v1/remotes")["data"]
    except ServerNotRunningError:
        return None


def remote_row(remote: dict[str, Any]) -> list[Any]:
    if "healthy" not in remote:
        health = "-"
    elif remote["healthy"]:
        health = "healthy"
    else:
        health = f"down ({remote.get('last_error') or 'cooling down'}), retry in {remote['retry_in_s']:.0f}s"
    latency = "-" if remote.get("latency_s") is None else f"{remote['latency_s'] * 1000:.0f} ms"
    models = ", ".join(remote.get("models") or []) or "-"
    return [remote["name"], remote["url"], health, latency, remote.get("in_flight", "-"), models]


def _targets(route: Any) -> str:
    return ", ".join(t.target if t.weight == 1 else f"{t.target} (weight {t.weight})" for t in route.targets)
