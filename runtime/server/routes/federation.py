"""The management API of routes and remotes: /v1/routes and /v1/remotes (admin keys; listing routes takes
any key, as listing models does)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from runtime.errors import NotFoundError
from runtime.protocol.common import ErrorResponse
from runtime.protocol.federation import (
    AddRemoteRequest,
    RemoteInfo,
    RemoteList,
    RouteInfo,
    RouteList,
    SetRouteRequest,
)
from runtime.server.auth import require_admin_key, require_api_key
from runtime.server.openapi import ERROR_RESPONSES, request_body
from runtime.server.routes.management import ADMIN_ONLY, read_json
from runtime.server.routes.openai import token_ids
from runtime.store.registry import check_name
from runtime.store.routes import Remote, Route, Target, split_target

SCHEMAS = (SetRouteRequest, AddRemoteRequest)  # request bodies, for the OpenAPI document
CONFLICT = {409: {"model": ErrorResponse, "description": "The name is taken (a model, or another remote)"}}


def create_router() -> APIRouter:
    router = APIRouter(tags=["management"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
    router.add_api_route("/v1/routes", list_routes, methods=["GET"], operation_id="listRoutes",
                         response_model=RouteList)
    router.add_api_route("/v1/routes/{name}", get_route, methods=["GET"], operation_id="getRoute",
                         response_model=RouteInfo)
    router.add_api_route("/v1/routes/{name}", set_route, methods=["PUT"], operation_id="setRoute",
                         response_model=RouteInfo, openapi_extra=request_body(SetRouteRequest),
                         dependencies=ADMIN_ONLY["dependencies"], responses={**ADMIN_ONLY["responses"], **CONFLICT})
    router.add_api_route("/v1/routes/{name}", delete_route, methods=["DELETE"], operation_id="deleteRoute",
                         **ADMIN_ONLY)
    router.add_api_route("/v1/remotes", list_remotes, methods=["GET"], operation_id="listRemotes",
                         response_model=RemoteList, dependencies=[Depends(require_admin_key)])
    router.add_api_route("/v1/remotes", add_remote, methods=["POST"], operation_id="addRemote",
                         response_model=RemoteInfo, openapi_extra=request_body(AddRemoteRequest),
                         dependencies=ADMIN_ONLY["dependencies"], responses={**ADMIN_ONLY["responses"], **CONFLICT})
    router.add_api_route("/v1/remotes/{name}", delete_remote, methods=["DELETE"], operation_id="deleteRemote",
                         **ADMIN_ONLY)
    return router


async def list_routes(request: Request) -> RouteList:
    return RouteList(data=[route_info(request.app.state, r) for r in request.app.state.routes.routes()])


async def get_route(request: Request, name: str) -> RouteInfo:
    return route_info(request.app.state, _route(request, name))


async def set_route(request: Request, name: str) -> RouteInfo:
    body = SetRouteRequest.model_validate(await read_json(request))
    targets = [Target(t) if isinstance(t, str) else Target(t.target, t.weight) for t in body.targets]
    state = request.app.state
    state.upstreams.sync()
    route = state.routes.set_route(Route(check_name(name), targets, body.fallbacks, body.token_ids))
    return route_info(state, route)


async def delete_route(request: Request, name: str) -> dict[str, Any]:
    request.app.state.routes.remove_route(name)
    return {"id": name, "object": "route", "deleted": True}


async def list_remotes(request: Request) -> RemoteList:
    state = request.app.state
    return RemoteList(data=[remote_info(state, u) for u in state.upstreams.all()])


async def add_remote(request: Request) -> RemoteInfo:
    body = AddRemoteRequest.model_validate(await read_json(request))
    state = request.app.state
    remote = Remote(body.name, body.url, body.models, body.timeout)
    state.routes.add_remote(remote, body.api_key)
    upstream = state.upstreams.get(remote.name)
    await state.upstreams.check(upstream)  # discover its models now
    return remote_info(state, upstream)


async def delete_remote(request: Request, name: str) -> dict[str, Any]:
    request.app.state.routes.remove_remote(name)
    request.app.state.upstreams.sync()
    return {"id": name, "object": "remote", "deleted": True}


def _route(request: Request, name: str) -> Route:
    route = request.app.state.routes.route(name)
    if route is None:
        raise NotFoundError(f"No route named '{name[:200]}'. See `stacklet route list`.", code="route_not_found")
    return route


def route_info(state: Any, route: Route) -> RouteInfo:
    return RouteInfo(id=route.name, created=route.created,
                     targets=[target_info(state, t.target, t.weight) for t in route.targets],
                     fallbacks=[target_info(state, f) for f in route.fallbacks],
                     token_ids=token_ids(state, route.name))


def target_info(state: Any, target: str, weight: int | None = None) -> dict[str, Any]:
    remote, _ = split_target(target)
    upstream = None if remote is None else state.upstreams.get(remote)
    healthy = True if upstream is None else upstream.healthy(time.monotonic())
    info: dict[str, Any] = {"target": target, "remote": None if upstream is None else upstream.name,
                            "healthy": healthy, "in_flight": state.metrics.targets[target].in_flight}
    return info if weight is None else {**info, "weight": weight}


def remote_info(state: Any, upstream: Any) -> RemoteInfo:
    in_flight = sum(stats.in_flight for target, stats in state.metrics.targets.items()
                    if split_target(target)[0] == upstream.name)
    return RemoteInfo(**upstream.describe(time.monotonic()), in_flight=in_flight)
