"""A requested model name -> the targets that may serve it, in the order to try them.

A name is a route (its targets and fallbacks), a local model, or `remote:model` for a model a remote
lists. A route's target that no longer exists, or whose kind cannot serve the endpoint, is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.errors import InvalidRequestError, ModelNotFoundError
from runtime.server.balancer import Candidate
from runtime.server.dispatch import MAX_HOPS, Dispatch
from runtime.spec import KINDS
from runtime.store.routes import split_target


def dispatch(state: Any, name: str, capability: str, path: str, keep_alive: float | None = None,
             prefix: Callable[[], str | None] = lambda: None, hops: int = 0) -> Dispatch:
    """The Dispatch for a request to `name`: 404, or 400 for a kind that does not serve `path`, right here.
    `hops` is how many stacklet routers relayed the request here already."""
    if hops >= MAX_HOPS:
        raise InvalidRequestError(f"The request for `{name}` passed {hops} stacklet routers: routes on two nodes "
                                  "point at each other. Fix them with `stacklet route list`.", code="route_loop")
    route = state.routes.route(name)
    if route is None:
        return Dispatch(state, [_direct(state, name, capability, path)], [], name, keep_alive, prefix, hops)
    primary = [_target(state, t.target, capability, t.weight) for t in route.targets]
    fallbacks = [_target(state, target, capability) for target in route.fallbacks]
    known = [c for c in primary + fallbacks if c is not None]
    if not any(c is not _UNSUPPORTED for c in known):
        if known:
            raise _unsupported(name, "route", path)
        raise ModelNotFoundError(name)
    return Dispatch(state, _usable(primary), _usable(fallbacks), name, keep_alive, prefix, hops)


def _usable(candidates: list[Candidate | None]) -> list[Candidate]:
    return [c for c in candidates if c is not None and c is not _UNSUPPORTED]


_UNSUPPORTED = Candidate("", "")  # a target that exists but whose kind does not serve the endpoint


def _direct(state: Any, name: str, capability: str, path: str) -> Candidate:
    record = state.registry.find(name)
    if record is not None:
        if capability not in KINDS[record.kind].capabilities:
            raise _unsupported(name, f"{record.kind} model", path)
        return Candidate(name, record.name)
    remote, model = split_target(name)
    upstream = None if remote is None else state.upstreams.get(remote)
    if upstream is None or model not in upstream.models:
        raise ModelNotFoundError(name)
    return Candidate(name, model, upstream)


def _target(state: Any, target: str, capability: str, weight: int = 1) -> Candidate | None:
    remote, model = split_target(target)
    upstream = None if remote is None else state.upstreams.get(remote)
    if upstream is not None:
        return Candidate(target, model, upstream, weight)
    record = state.registry.find(target)
    if record is None:
        return None
    if capability not in KINDS[record.kind].capabilities:
        return _UNSUPPORTED
    return Candidate(target, record.name, None, weight)


def _unsupported(name: str, what: str, path: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"The model `{name}` is a {what} and does not support /v1{path}. See `stacklet list` for the models "
        "that do.", param="model", code="model_not_supported",
    )
