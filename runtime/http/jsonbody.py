"""The one parser of JSON request bodies, on the server and in the workers.

Python's json module takes what a hostile client can send and breaks on it later: nesting deep
enough to exhaust the recursion limit, lone UTF-16 surrogates (`"\\ud800"`) that cannot be encoded
for the tokenizer, and NaN, Infinity or 1e400 that overflow when an option reaches C. Each is a 400
here, with the OpenAI envelope and a message that names the problem.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from itertools import accumulate
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from runtime.errors import InvalidRequestError
from runtime.http.errors import JSON_PARSE_MESSAGE

MAX_JSON_DEPTH = 64

# The depth check runs on the raw bytes before parsing, at C speed: strings are cut out (their
# brackets do not nest), the rest is reduced to its brackets, mapped to +1 / -1 and summed up.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NESTING = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
# A lone surrogate can only come from a \uD800-\uDFFF escape (the body is decoded strictly).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json_body(body: bytes) -> dict[str, Any]:
    """A JSON object request body; InvalidRequestError (400) for anything else."""
    depth = _depth(body)
    if depth > MAX_JSON_DEPTH:
        raise InvalidRequestError(
            f"The JSON body is nested {depth} levels deep; the limit is {MAX_JSON_DEPTH}. Send a flatter body.")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"The request body is not valid UTF-8 (byte {exc.start}). Send JSON encoded as UTF-8.") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise InvalidRequestError(JSON_PARSE_MESSAGE) from None
    if not isinstance(data, dict):
        raise InvalidRequestError(JSON_PARSE_MESSAGE)
    if _SURROGATE_ESCAPE.search(body) and not _encodable(data):
        check_text(data, "")
    return data


def check_text(value: Any, param: str) -> None:
    """400 naming the first string in `value` (keys included) that holds a lone surrogate."""
    stack = [(value, param)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str) and (found := _SURROGATE.search(item)):
            name = path.encode("utf-8", "backslashreplace").decode() or None  # a key may hold one too
            raise InvalidRequestError(
                f"Invalid value for '{name or 'body'}': the text contains a lone UTF-16 surrogate "
                f"(\\u{ord(found.group()):04x}), which is not valid Unicode. Send valid UTF-8 text.",
                param=name, code="invalid_value")
        if isinstance(item, dict):
            for key, child in item.items():
                name = f"{path}.{key}" if path else key
                stack += [(key, name), (child, name)]
        elif isinstance(item, list):
            stack += [(child, f"{path}[{index}]") for index, child in enumerate(item)]


def _depth(body: bytes) -> int:
    brackets = _STRING.sub(b"", body).translate(_NESTING, _NOT_BRACKETS)
    if len(brackets) <= MAX_JSON_DEPTH:
        return 0
    return max(accumulate(array("b", brackets)))


def _encodable(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _refuse_constant(token: str) -> Any:
    raise InvalidRequestError(f"The JSON body contains {token}, which is not a number JSON allows. "
                              "Send finite numbers only.")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise InvalidRequestError(f"The JSON body contains the number {token[:40]}, which is too large "
                                  "for a float. Send finite numbers only.")
    return value


class JSONBodyRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body())
        return self._json


class JSONBodyRoute(APIRoute):
    """A route whose pydantic body is parsed by parse_json_body, not by Starlette's plain json.loads.
    Pass it as `APIRouter(route_class=JSONBodyRoute)`."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(JSONBodyRequest(request.scope, request.receive))

        return handle
