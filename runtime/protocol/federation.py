"""Wire schemas of the routes and remotes management API (/v1/routes, /v1/remotes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class RouteTarget(BaseModel):
    model_config = {"extra": "forbid"}

    target: str = Field(max_length=300)  # a local model or `remote:model`
    weight: int = 1


class SetRouteRequest(BaseModel):
    """Body of PUT /v1/routes/{name}: targets as names or {target, weight}, and the ordered fallbacks."""

    model_config = {"extra": "forbid"}

    targets: list[RouteTarget | str] = Field(max_length=16)
    fallbacks: list[str] = Field(default=[], max_length=16)
    token_ids: Literal["model", "cl100k_base"] | None = None  # None: cl100k_base for OpenAI's embedding model names


class RouteInfo(BaseModel):
    object: Literal["route"] = "route"
    id: str
    created: int
    targets: list[dict[str, Any]]  # {target, weight, healthy, in_flight}
    fallbacks: list[dict[str, Any]]
    token_ids: str  # how /embeddings reads integer inputs: "model" or "cl100k_base"


class RouteList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RouteInfo]


class AddRemoteRequest(BaseModel):
    """Body of POST /v1/remotes. The key is sent upstream and never shown back."""

    model_config = {"extra": "forbid"}

    name: str = Field(max_length=64)
    url: str = Field(max_length=2000)
    api_key: str | None = Field(default=None, max_length=8192)
    models: list[str] | None = Field(default=None, max_length=1000)
    timeout: float = 300.0


class RemoteInfo(BaseModel):
    object: Literal["remote"] = "remote"
    name: str
    url: str
    healthy: bool
    retry_in_s: float
    failures: int
    latency_s: float | None
    last_error: str | None
    in_flight: int
    models: list[str]
    models_listed: bool  # listed by hand (else discovered from the remote's /models)
    timeout: float
    has_key: bool


class RemoteList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RemoteInfo]
