"""The `model` field across a route: the target's name on the way up, the client's name on the way back.

On the way back the first `"model": "..."` of a JSON body, and of each event of a stream, is replaced: in
OpenAI's answers it is the top-level field (an event holds just that one), and a `"model"` inside generated
text is escaped, so it never matches. A stream's event cut between two reads waits for its line's end.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode

_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
_FORM_MODEL = re.compile(rb'(name="model"\r\n(?:[^\r\n]+\r\n)*\r\n)[^\r]*(\r\n--)')
MAX_PENDING_LINE = 1 << 20  # a line longer than this is passed on as it is


class ModelRewrite:
    def __init__(self, asked: str) -> None:
        self.field = b'"model":' + json.dumps(asked).encode()

    def whole(self, body: bytes) -> bytes:
        return _MODEL_FIELD.sub(lambda _: self.field, body, count=1)

    async def stream(self, head: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Rewritten in whole lines: a read that ends inside a line keeps that line for the next one."""
        pending = b""
        data: bytes | None = head
        while data is not None:
            data = pending + data
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) < MAX_PENDING_LINE:
                pending = data
            else:
                cut = cut or len(data)
                pending = data[cut:]
                yield self._events(data[:cut])
            data = await anext(chunks, None)
        if pending:
            yield self._events(pending)

    def _events(self, data: bytes) -> bytes:
        """Every event's field at once: an OpenAI stream event holds one top-level `model`."""
        return _MODEL_FIELD.sub(lambda _: self.field, data) if b'"model"' in data else data


def rewrite_request_model(body: bytes, content_type: str | None, model: str) -> bytes:
    """`body` with its `model` set to the target's name (JSON, multipart or urlencoded form)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return _FORM_MODEL.sub(lambda m: m[1] + model.encode() + m[2], body, count=1)
    if kind == "application/x-www-form-urlencoded":
        fields = [(k, model if k == "model" else v) for k, v in parse_qsl(body.decode(), keep_blank_values=True)]
        return urlencode(fields).encode()
    data = json.loads(body)  # validated already by the route
    if data.get("model") == model:
        return body
    data["model"] = model
    return json.dumps(data, ensure_ascii=False).encode()
