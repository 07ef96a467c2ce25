"""/models wire schemas: OpenAI's Model and list, and the management API's superset of them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "stacklet"
    meta: dict[str, Any] = {}  # kind, capabilities, context length, voices, ...


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ManagedModel(Model):
    """An OpenAI Model plus what the management API knows about it."""

    state: Literal["available", "loading", "loaded"]
    kind: str
    engine: str
    size: int
    source: dict[str, Any]
    files: list[dict[str, Any]]
    options: dict[str, Any]  # stored with the model; `worker.options` are the ones in effect
    keep_alive: float | None = None  # stored with the model, in seconds (negative = forever)
    worker: dict[str, Any] | None = None  # the loaded worker as the scheduler reports it
    expires_at: float | None = None  # when an idle loaded model unloads (unix seconds)


class ManagedModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ManagedModel]


class LoadModelRequest(BaseModel):
    """Body of POST /v1/models/{id}/load: engine options plus keep_alive."""

    model_config = {"extra": "allow"}

    keep_alive: float | str | None = None


class ConfigureModelRequest(LoadModelRequest):
    """Body of PATCH /v1/models/{id}: engine options plus keep_alive to store; null clears one."""


class PullModelRequest(BaseModel):
    source: str
    name: str | None = None
    kind: str | None = None
    revision: str | None = None
    files: list[str] | None = None
    quant: str | None = None  # fit, smallest or largest, when the source names no quant
    dry_run: bool = False  # answer with what the pull would fetch (JSON), fetching nothing
