"""OpenAI error envelopes for every failure, installed on the server and on each worker."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from runtime.errors import InvalidRequestError, StackletError

log = logging.getLogger("stacklet")

JSON_PARSE_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. "
    "If you have trouble figuring out how to fix this, please contact us through our help center at "
    "help.openai.com.)"
)
INTERNAL_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def error_response(exc: StackletError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=exc.headers())


_PYDANTIC_MARKERS = frozenset(
    {"str", "int", "float", "bool", "none", "dict", "list", "bytes", "function-after", "function-before",
     "function-wrap", "function-plain", "json-or-python"}
)


def param_path(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """pydantic location -> OpenAI param path, e.g. ('body', 'messages', 0, 'content') -> messages[0].content."""
    parts = [p for p in loc if p not in ("body", "query", "path", "form")]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or part in _PYDANTIC_MARKERS:
            continue  # which union member or validator failed, not a field name
        else:
            out += f".{part}" if out else str(part)
    return out or None


def validation_error(errors: list[dict[str, Any]]) -> InvalidRequestError:
    """The first pydantic error, phrased the way OpenAI phrases it."""
    first = errors[0]
    kind = first.get("type", "")
    loc = tuple(first.get("loc", ()))
    param = param_path(loc)
    if kind == "json_invalid":
        return InvalidRequestError(JSON_PARSE_MESSAGE)
    if kind == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param,
                                   code="missing_required_parameter")
    if kind == "extra_forbidden":
        return InvalidRequestError(f"Unrecognized request argument supplied: {param}")
    if kind.endswith("_type") or kind in ("model_attributes_type", "dict_type", "list_type"):
        return InvalidRequestError(
            f"Invalid type for '{param}': {first.get('msg', 'wrong type')}.", param=param, code="invalid_type"
        )
    message = str(first.get("msg", "Invalid value"))
    message = message.removeprefix("Value error, ")
    return InvalidRequestError(f"Invalid value for '{param}': {message}.", param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StackletError)
    async def _stacklet(_: Request, exc: StackletError) -> JSONResponse:
        if exc.status >= 500 and not isinstance(exc.__cause__, StackletError):
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return error_response(validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, StackletError):  # FastAPI wraps what a body parser raises (jsonbody.py)
            return error_response(exc.__cause__)
        if exc.status_code in (404, 405):
            message = f"Invalid URL ({request.method} {request.url.path})"
            body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
            return JSONResponse(body, status_code=404 if exc.status_code == 404 else 405)
        kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        body = {"error": {"message": str(exc.detail), "type": kind, "param": None, "code": None}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        body = {"error": {"message": INTERNAL_MESSAGE, "type": "server_error", "param": None, "code": None}}
        return JSONResponse(body, status_code=500)
