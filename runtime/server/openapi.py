"""What the OpenAPI document says: error responses, hand-parsed request bodies, their schemas.

The OpenAI handlers read raw bodies themselves (to forward them unchanged), so their request
schemas are attached here instead of coming from handler signatures.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from runtime.protocol.common import ErrorResponse

REF_TEMPLATE = "#/components/schemas/{model}"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    404: {"model": ErrorResponse, "description": "Unknown model or URL"},
    413: {"model": ErrorResponse, "description": "Request body too large"},
    503: {"model": ErrorResponse, "description": "Model queue full or server busy; retry after Retry-After"},
}


def request_body(schema: type[BaseModel], *, multipart: bool = False) -> dict[str, Any]:
    media_type = "multipart/form-data" if multipart else "application/json"
    ref = {"$ref": REF_TEMPLATE.format(model=schema.__name__)}
    return {"requestBody": {"required": True, "content": {media_type: {"schema": ref}}}}


def success_response(media_types: tuple[str, ...]) -> dict[str, Any]:
    return {"description": "The OpenAI response", "content": {media: {} for media in media_types}}


class _UploadsAsBinary(GenerateJsonSchema):
    """Uploaded files (the only non-JSON fields in the request schemas) are binary strings."""

    def handle_invalid_for_json_schema(self, schema: core_schema.CoreSchema, error_info: str) -> JsonSchemaValue:
        return {"type": "string", "format": "binary"}


def install_openapi(app: FastAPI, schemas: list[type[BaseModel]]) -> None:
    """Generate the document once, with `schemas` added to its components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _, defs = models_json_schema([(s, "validation") for s in schemas], ref_template=REF_TEMPLATE,
                                         schema_generator=_UploadsAsBinary)
            document.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            for operation in (op for path in document["paths"].values() for op in path.values()):
                operation["responses"].pop("422", None)  # validation errors are 400 here, never 422
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
