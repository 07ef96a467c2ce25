"""Hostile engine options and output schemas, against a real `python -m runtime` with the real SmolLM2.

Each case is one request as an attacker would send it: grammar bombs in response_format and tool
parameters (repetition counts that crashed or grew the worker, nesting that burned its CPU), and load and
PATCH options that llama.cpp or ctypes would wrap, assert or crash on, or that the model's training context
or the memory budget cannot take. Every one must be a 400 in the OpenAI envelope naming what was wrong,
and afterwards the server answers /health, the same worker process still generates, and the model keeps
the options it had.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serverproc import local_record, server_process

from runtime.store.metadata import describe

MODEL = "smol"
MIB = 1024 * 1024
BUDGET = 900 * MIB  # SmolLM2 needs about 709 MiB as it comes, 1069 MiB with an f32 KV cache


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: Any  # a dict is sent as JSON, bytes as they are
    param: str | None = None  # the envelope's param, when the case pins one down
    message: str = ""  # a part of the message that names the limit
    code: str | None = None


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def schema_case(case_id: str, schema: Any, message: str, **extra: Any) -> Case:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, **extra,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    return Case(case_id, "POST", "/v1/chat/completions", body, "response_format", message)


def tool_case(case_id: str, parameters: Any, message: str, choice: Any = "required", param: str | None = "tools"
              ) -> Case:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Call f."}], "max_tokens": 8,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}],
            "tool_choice": choice}
    return Case(case_id, "POST", "/v1/chat/completions", body, param, message)


def load(case_id: str, body: Any, param: str | None, message: str = "", code: str | None = None) -> Case:
    return Case(case_id, "POST", f"/v1/models/{MODEL}/load", body, param, message, code)


def patch(case_id: str, body: Any, param: str | None, message: str = "") -> Case:
    return Case(case_id, "PATCH", f"/v1/models/{MODEL}", body, param, message)


def both(case_id: str, body: Any, param: str | None, message: str = "") -> list[Case]:
    return [load(f"load-{case_id}", body, param, message), patch(f"patch-{case_id}", body, param, message)]


STRINGS_34 = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 1000} for i in range(34)}}
CASES = [
    # Grammar bombs: each crashed (SIGSEGV), grew or pinned the worker before it was bounded.
    schema_case("maxLength-30000", {"type": "string", "maxLength": 30000}, "maxLength is 30000"),
    schema_case("maxLength-100000", {"type": "object", "properties": {"bio": {"type": "string", "maxLength": 100000}}},
                "maxLength is 100000"),
    schema_case("maxLength-30000-stream", {"type": "string", "maxLength": 30000}, "maxLength is 30000", stream=True),
    schema_case("minLength-1e9", {"type": "string", "minLength": 1_000_000_000}, "minLength is 1000000000"),
    schema_case("minItems-1e9", {"type": "array", "items": {"type": "integer"}, "minItems": 10**9}, "minItems"),
    schema_case("maxItems-1e6", {"type": "array", "maxItems": 10**6}, "maxItems"),
    schema_case("maxLength-float", {"type": "string", "maxLength": 1e300}, "maxLength"),
    schema_case("nested-20", nested(20), "nests deeper"),
    schema_case("enum-5000", {"enum": list(range(5000))}, "enum has 5000 entries"),
    schema_case("anyOf-5000", {"anyOf": [{"const": i} for i in range(5000)]}, "anyOf has 5000 entries"),
    schema_case("expanded-size", STRINGS_34, "grammar elements"),
    schema_case("array-of-long-strings", {"type": "array", "items": {"type": "string", "maxLength": 1000},
                                          "maxItems": 1000}, "multiply to"),
    schema_case("pattern-count", {"type": "string", "pattern": "a{100000}"}, "pattern"),
    schema_case("pattern-nested", {"type": "string", "pattern": "((a{10}){10}){100}"}, "multiply to"),
    schema_case("pattern-lookahead", {"type": "string", "pattern": "(?=a)b"}, "pattern"),
    schema_case("ref-remote", {"$ref": "https://example.com/s.json"}, "not a local reference"),
    schema_case("ref-dangling", {"$ref": "#/$defs/none"}, "points at nothing"),
    schema_case("ref-left-recursive", {"anyOf": [{"$ref": "#"}, {"type": "null"}]}, "left-recursive"),
    schema_case("const-200k", {"const": "x" * 200_000}, "characters long"),
    schema_case("type-unknown", {"type": "bytes"}, "unknown type"),
    tool_case("tools-nested-20-required", nested(20), "nests deeper"),
    tool_case("tools-nested-20-named", nested(20), "nests deeper", {"type": "function", "function": {"name": "f"}}),
    tool_case("tools-maxLength-30000", {"type": "object", "properties": {"q": {"type": "string", "maxLength": 30000}}},
              "maxLength is 30000"),
    tool_case("tools-nested-400-required", nested(400), "nested", param=None),  # the JSON body's own depth limit
    # Load and PATCH options: wrapped by ctypes, asserted on or crashed on by llama.cpp, or not finite.
    *both("ctx-1", {"ctx_size": 1}, "ctx_size", "at least 256"),
    *both("ctx-255", {"ctx_size": 255}, "ctx_size", "at least 256"),
    *both("ctx-fraction", {"ctx_size": 1.5}, "ctx_size", "whole number"),
    *both("ctx-bool", {"ctx_size": True}, "ctx_size", "not true or false"),
    *both("ctx-wraps", {"ctx_size": 4294967808}, "ctx_size"),
    *both("ctx-over-training", {"ctx_size": 1_000_000_000}, "ctx_size", "trained with a context of 8192"),
    *both("ctx-just-over-training", {"ctx_size": 8193}, "ctx_size", "use at most 8192"),
    *both("ctx-negative", {"ctx_size": -1}, "ctx_size"),
    *both("ctx-string-exponent", {"ctx_size": "1e9"}, "ctx_size"),
    *both("ctx-list", {"ctx_size": [4096]}, "ctx_size"),
    *both("ctx-huge-int", {"ctx_size": 10**40}, "ctx_size"),
    *both("ctx-infinity", b'{"ctx_size": Infinity}', None),
    *both("ctx-nan", b'{"ctx_size": NaN}', None),
    *both("ctx-1e400", b'{"ctx_size": 1e400}', None),
    *both("threads-100000", {"threads": 100000}, "threads", "per CPU"),
    *both("threads-wraps", {"threads": 2**32 + 1}, "threads"),
    *both("threads-0", {"threads": 0}, "threads"),
    *both("threads-bool", {"threads": True}, "threads"),
    *both("gpu-layers-1e20", {"n_gpu_layers": 1e20}, "n_gpu_layers"),
    *both("gpu-layers-wraps", {"n_gpu_layers": "100000000000000000000"}, "n_gpu_layers"),
    *both("gpu-layers-negative", {"n_gpu_layers": -1}, "n_gpu_layers"),
    *both("main-gpu-wraps", {"main_gpu": 2**32}, "main_gpu"),
    *both("parallel-100000", {"parallel": 100000}, "parallel"),
    *both("parallel-0", {"parallel": 0}, "parallel"),
    *both("tensor-split-17", {"tensor_split": [1] * 17}, "tensor_split"),
    *both("tensor-split-negative", {"tensor_split": [-1, 2]}, "tensor_split"),
    *both("cache-type-unknown", {"cache_type_k": "f64"}, "cache_type_k"),
    *both("unknown-option", {"warp_speed": 9}, "warp_speed"),
    *both("keep-alive-infinity", b'{"keep_alive": Infinity}', None),
    *both("keep-alive-huge", {"keep_alive": 10**400}, "keep_alive"),
    *both("keep-alive-word", {"keep_alive": "soon"}, "keep_alive"),
    load("memory-budget", {"cache_type_k": "f32", "cache_type_v": "f32"}, "ctx_size", "memory budget of 900 MiB",
         "memory_budget_exceeded"),
    load("valid-then-invalid", {"ctx_size": 4096, "threads": 100000}, "threads"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm_gguf: Path) -> Iterator[dict[str, Any]]:
    """The running server and the worker that serves the model."""
    home = tmp_path_factory.mktemp("hostile-options")
    metadata = describe({"model": [smollm_gguf]})[1]  # the training context, as `pull` records it
    records = [local_record(MODEL, "llm", {"model": smollm_gguf}, metadata=metadata)]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STACKLET_MEMORY_BUDGET", str(BUDGET))
        with server_process(home, records) as (url, key):
            env.undo()
            running = {"url": url, "key": key}
            assert chat(running)[0] == 200
            running["worker"] = worker(running)["pid"]
            yield running


def send(server: dict[str, Any], method: str, path: str, body: Any) -> tuple[int, str, bytes]:
    """(status, content type, body) of one raw request."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {server['key']}"}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    host, port = server["url"].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


def chat(server: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _, body = send(server, "POST", "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
    return status, json.loads(body)


def worker(server: dict[str, Any]) -> dict[str, Any]:
    status, _, body = send(server, "GET", f"/v1/models/{MODEL}", b"")
    assert status == 200
    return json.loads(body)["worker"]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_option_or_schema(server: dict[str, Any], case: Case) -> None:
    status, content_type, raw = send(server, case.method, case.path, case.body)
    assert status == 400, raw[:500]
    assert content_type == "application/json"
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error", error
    if case.param is not None:
        assert error["param"] == case.param, error
    assert case.message in error["message"], error
    if case.code is not None:
        assert error["code"] == case.code, error
    # Still up: the same worker generates, with the options it had, and nothing was stored.
    status, _, body = send(server, "GET", "/health", b"")
    assert status == 200
    status, answer = chat(server)
    assert status == 200 and answer["choices"][0]["finish_reason"] in ("length", "stop"), answer
    now = worker(server)
    assert (now["pid"], now["options"]) == (server["worker"], {})
    status, _, body = send(server, "GET", f"/v1/models/{MODEL}", b"")
    assert json.loads(body)["options"] == {} and json.loads(body)["keep_alive"] is None
