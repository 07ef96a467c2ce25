"""A small OpenAI-compatible upstream that misbehaves on purpose, one behaviour per URL prefix.

`http://host:port/<mode>/v1` is a remote whose chat completions (and /models) behave as `mode` says:
  ok      answers (streamed or not), echoing the model it was asked for
  500     answers 500 before the first byte
  drop    streams two chunks, then drops the connection
  slow    waits SLOW_S before answering (longer than the remote's timeout)
  429     answers 429 with Retry-After: RETRY_AFTER_S
  flap    like ok while up, else 500 everywhere; POST /flap/up or /flap/down flips it
  long    streams a chunk every 50 ms for a minute, noting when its client goes away
GET /<mode>/stats gives the chat requests each mode received and the last Authorization header seen.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

SLOW_S = 30.0
RETRY_AFTER_S = 7


class FaultServer:
    def __init__(self) -> None:
        self.chats: Counter[str] = Counter()
        self.authorization: dict[str, str] = {}
        self.hops: dict[str, str] = {}
        self.up = True
        self.client_gone: Counter[str] = Counter()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        mode, _, rest = scope["path"].lstrip("/").partition("/")
        body = await _body(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if rest == "stats":
            await _json(send, 200, {"chats": dict(self.chats), "authorization": self.authorization})
        elif rest in ("up", "down"):
            self.up = rest == "up"
            await _json(send, 200, {"up": self.up})
        elif mode == "flap" and not self.up:
            await _json(send, 500, {"error": {"message": "down", "type": "server_error"}})
        elif rest == "v1/models":
            await _json(send, 200, {"object": "list", "data": [{"id": "echo", "object": "model"}]})
        elif rest == "v1/chat/completions":
            self.chats[mode] += 1
            self.authorization[mode] = headers.get("authorization", "")
            self.hops[mode] = headers.get("x-stacklet-hops", "")
            await self._chat(mode, json.loads(body), receive, send)
        else:
            await _json(send, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    async def _chat(self, mode: str, request: dict[str, Any], receive: Any, send: Any) -> None:
        if mode == "500":
            await _json(send, 500, {"error": {"message": "boom", "type": "server_error"}})
        elif mode == "429":
            await _json(send, 429, {"error": {"message": "slow down", "type": "rate_limit_error"}},
                        ((b"retry-after", str(RETRY_AFTER_S).encode()),))
        elif mode == "slow":
            await asyncio.sleep(SLOW_S)
            await _json(send, 200, _completion(request["model"]))
        elif mode == "long":
            await self._long(receive, send)
        elif request.get("stream"):
            await self._stream(mode, request["model"], send)
        else:
            await _json(send, 200, _completion(request["model"]))

    async def _stream(self, mode: str, model: str, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for word in ("Hello", " there"):
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                     "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                        "more_body": True})
            await asyncio.sleep(0.05)
        if mode == "drop":
            raise ConnectionAbortedError("dropped on purpose")  # uvicorn closes the connection mid-body
        done = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await send({"type": "http.response.body", "body": f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode(),
                    "more_body": False})


    async def _long(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        gone = asyncio.ensure_future(receive())  # the next message is the client's disconnect
        for _ in range(1200):
            if gone.done():
                self.client_gone["long"] += 1
                return
            chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "x"}}]}
            await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                        "more_body": True})
            await asyncio.sleep(0.05)
        gone.cancel()
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _completion(model: str) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


async def _body(receive: Any) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _json(send: Any, status: int, data: dict[str, Any], extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})
