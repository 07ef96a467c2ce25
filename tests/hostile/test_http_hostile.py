"""Hostile HTTP against a real `python -m runtime` serving the real SmolLM2-135M-Instruct.

Each case is sent as raw bytes (httpx with a byte body, or a plain socket for framing errors) and must
get a 4xx in the API's own envelope; afterwards the server answers /health and the same worker process
answers a chat. A --no-auth server with fake-engine models takes the browser cases (foreign Host and
Origin), where the fake engine is enough: those are refused before any model is involved.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverproc import free_port, local_record, server_process, wait_healthy

from runtime.config import Settings
from runtime.scheduler.process import socket_dir
from runtime.server import state
from runtime.store.registry import ModelRecord, Registry

MODEL = "smol"
WAIT_S = 60  # generous bound for "eventually", never a timing assertion
TEN_MB = "x" * 10_000_000
WRONG_KEY = "sk-hostile-wrong-key-0123456789abcdef"


@dataclass
class Live:
    root: str
    key: str
    home: Path
    worker_pid: int = 0

    @property
    def port(self) -> int:
        return int(self.root.rsplit(":", 1)[1])

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def still_serving(live: Live) -> int:
    """The server answers and the model's worker answers a chat; returns the worker's pid."""
    assert httpx.get(f"{live.root}/health").status_code == 200
    chat = httpx.post(f"{live.root}/v1/chat/completions", headers=live.auth, timeout=WAIT_S, json={
        "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
    assert chat.status_code == 200, chat.text
    return httpx.get(f"{live.root}/v1/models/{MODEL}", headers=live.auth).json()["worker"]["pid"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, smollm_gguf: Path) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("hostile")
    with server_process(home, [local_record(MODEL, "llm", {"model": smollm_gguf})]) as (root, key):
        server = Live(root, key, home)
        server.worker_pid = still_serving(server)
        yield server
        log = (home / "server.log").read_text()
        assert WRONG_KEY not in log  # wrong keys are not logged either (server_process checks the real one)
        assert len(log) < 1_000_000  # the 10 MB strings were cut (the issue saw an 11 MB log)
        assert max(len(line) for line in log.splitlines()) < 2_500
        assert "Traceback" not in log  # nothing failed unexpectedly on the way


@pytest.fixture
def served(live: Live) -> Iterator[Live]:
    """`live`, checked after the case: the server still serves and the worker did not crash."""
    yield live
    assert still_serving(live) == live.worker_pid, "the worker was replaced: it crashed"


def assert_envelope(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The OpenAI envelope {"error": {message, type, param, code}}, or Anthropic's {"type": "error", ...}."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    error = body["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if body.get("type") != "error":
        assert set(error) == {"message", "type", "param", "code"}
        if code is not None:
            assert error["code"] == code
    return error


# 1. Bodies no JSON route may choke on, on every route that reads a JSON body.

JSON_ROUTES = [
    ("POST", "/v1/chat/completions"), ("POST", "/v1-openai/chat/completions"), ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"), ("POST", "/v1/images/generations"), ("POST", "/v1/images/edits"),
    ("POST", "/v1/audio/speech"), ("POST", "/v1/audio/transcriptions"), ("POST", "/v1/audio/translations"),
    ("POST", "/v1/models"), ("POST", f"/v1/models/{MODEL}/load"), ("PATCH", f"/v1/models/{MODEL}"),
    ("POST", "/v1/responses"), ("POST", "/v1-openai/responses"), ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
]
HEAD = b'{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "input": "hi", "prompt": "hi", '
BAD_BODIES = {
    "array-nested-50000": HEAD + b'"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "object-nested-200": HEAD + b'"x": ' + b'{"a": ' * 200 + b"1" + b"}" * 200 + b"}",
    "mixed-nested-100": HEAD + b'"x": ' + b'[{"a": ' * 50 + b"1" + b"}]" * 50 + b"}",
    "nan": HEAD + b'"temperature": NaN, "ctx_size": NaN}',
    "infinity": HEAD + b'"temperature": Infinity, "ctx_size": Infinity}',
    "minus-infinity": HEAD + b'"top_p": -Infinity, "ctx_size": -Infinity}',
    "1e400": HEAD + b'"max_tokens": 1e400, "ctx_size": 1e400}',
    "lone-surrogate": HEAD + b'"x": "a\\ud800b"}',
    "utf8-encoded-surrogate": HEAD + b'"x": "a\xed\xa0\x80b"}',
    "invalid-utf8": HEAD + b'"x": "\xff\xfe"}',
    "top-level-array": b"[" + HEAD + b'"x": 1}]',
    "top-level-string": b'"hello"',
    "truncated": HEAD[:-10],
    "5000-digit-int": HEAD + b'"max_tokens": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
@pytest.mark.parametrize(("method", "path"), JSON_ROUTES, ids=[f"{m} {p}" for m, p in JSON_ROUTES])
def test_bad_json_bodies_are_400(served, method, path, body):
    response = httpx.request(method, served.root + path, content=body, timeout=WAIT_S,
                             headers={**served.auth, "x-api-key": served.key, "Content-Type": "application/json"})
    assert_envelope(response, 400)


# 2. A lone surrogate in every text field: 400 naming the field (the worker used to die on it).

SURROGATE = "a\\ud800b"
TEXT_FIELDS = [
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "%s"}]}',
     "messages[0].content"),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": [{"type": "text", '
                             '"text": "%s"}]}]}', "messages[0].content[0].text"),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "system", "content": "%s"}, '
                             '{"role": "user", "content": "hi"}]}', "messages[0].content"),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "hi", "name": "%s"}]}',
     "messages[0].name"),
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "stop": ["%s"]}',
     "stop[0]"),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "user": "%s"}',
     "user"),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": '
                             '"function", "function": {"name": "f", "description": "%s"}}]}',
     "tools[0].function.description"),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "response_format": '
                             '{"type": "json_schema", "json_schema": {"name": "s", "schema": {"enum": ["%s"]}}}}',
     "response_format.json_schema.schema.enum[0]"),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "%s": 1}',
     "a\\ud800b"),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "keep_alive": "%s"}',
     "keep_alive"),
    ("/v1/completions", '{"model": "smol", "prompt": "%s"}', "prompt"),
    ("/v1/completions", '{"model": "smol", "prompt": ["ok", "%s"]}', "prompt[1]"),
    ("/v1/completions", '{"model": "smol", "prompt": "hi", "suffix": "%s"}', "suffix"),
    ("/v1/embeddings", '{"model": "smol", "input": "%s"}', "input"),
    ("/v1/embeddings", '{"model": "smol", "input": ["%s", "ok"]}', "input[0]"),
    ("/v1/images/generations", '{"model": "smol", "prompt": "%s"}', "prompt"),
    ("/v1/audio/speech", '{"model": "smol", "input": "%s", "voice": "alloy"}', "input"),
    ("/v1/models", '{"source": "%s"}', "source"),
    ("/v1/models", '{"source": "owner/repo", "name": "%s"}', "name"),
    ("/v1/models", '{"source": "owner/repo", "revision": "%s"}', "revision"),
    (f"/v1/models/{MODEL}/load", '{"keep_alive": "%s"}', "keep_alive"),
    ("/v1/responses", '{"model": "smol", "input": "%s"}', "input"),
    ("/v1/responses", '{"model": "smol", "input": "hi", "instructions": "%s"}', "instructions"),
    ("/v1/messages", '{"model": "smol", "max_tokens": 4, "messages": [{"role": "user", "content": "%s"}]}', None),
]


@pytest.mark.parametrize(("path", "template", "param"), TEXT_FIELDS, ids=[f"{p} {f}" for p, _, f in TEXT_FIELDS])
def test_lone_surrogates_are_400_naming_the_field(served, path, template, param):
    response = httpx.post(served.root + path, content=(template % SURROGATE).encode(), timeout=WAIT_S,
                          headers={**served.auth, "x-api-key": served.key, "Content-Type": "application/json"})
    error = assert_envelope(response, 400)
    assert "lone UTF-16 surrogate" in error["message"]
    if param is not None:
        assert error["param"] == param


def test_patch_with_a_surrogate_or_infinity_changes_nothing(served):
    before = httpx.get(f"{served.root}/v1/models/{MODEL}", headers=served.auth).json()["options"]
    for body in (b'{"keep_alive": "a\\ud800"}', b'{"ctx_size": Infinity}', b'{"ctx_size": NaN}'):
        response = httpx.patch(f"{served.root}/v1/models/{MODEL}", content=body, headers=served.auth)
        assert_envelope(response, 400)
    assert httpx.get(f"{served.root}/v1/models/{MODEL}", headers=served.auth).json()["options"] == before


MULTIPART_CHARSETS = ["unicode_escape", "raw_unicode_escape"]


@pytest.mark.parametrize("charset", MULTIPART_CHARSETS)
@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/images/edits"])
def test_multipart_parts_that_decode_to_surrogates_are_400(served, path, charset):
    body = (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nsmol\r\n'
            b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na\\ud800\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n--b--\r\n')
    response = httpx.post(served.root + path, content=body, headers={
        **served.auth, "Content-Type": f"multipart/form-data; boundary=b; charset={charset}"})
    assert assert_envelope(response, 400)["param"] == "prompt"


# 3. Non-finite numbers in numeric fields: 400, never an OverflowError.

NUMBERS = [
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "temperature": %s}'),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": %s}'),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "seed": %s}'),
    ("/v1/chat/completions", '{"model": "smol", "messages": [{"role": "user", "content": "hi"}], '
                             '"logit_bias": {"1": %s}}'),
    ("/v1/completions", '{"model": "smol", "prompt": "hi", "frequency_penalty": %s}'),
    ("/v1/embeddings", '{"model": "smol", "input": "hi", "dimensions": %s}'),
    (f"/v1/models/{MODEL}/load", '{"ctx_size": %s}'),
    (f"/v1/models/{MODEL}/load", '{"threads": %s}'),
]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
@pytest.mark.parametrize(("path", "template"), NUMBERS, ids=[f"{p} {t[-30:]}" for p, t in NUMBERS])
def test_non_finite_numbers_are_400(served, path, template, number):
    response = httpx.post(served.root + path, content=(template % number).encode(), headers=served.auth,
                          timeout=WAIT_S)
    assert "Send finite numbers only." in assert_envelope(response, 400)["message"]


# 4. HTTP framing errors, over a plain socket: uvicorn's 400, in the JSON envelope.


def raw(port: int, data: bytes) -> httpx.Response:
    """Send `data` as is and read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


def post(head: bytes, body: bytes = b"") -> bytes:
    return b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + head + b"\r\n" + body


CHAT = b'{"model": "smol", "messages": [{"role": "user", "content": "hi"}]}'
FRAMING = {
    "duplicate-content-length": post(b"Content-Length: 2\r\nContent-Length: 3\r\n", b"{}x"),
    "duplicate-equal-content-length": post(b"Content-Length: 2\r\nContent-Length: 2\r\n", b"{}"),
    "content-length-and-chunked": post(b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n"),
    "negative-content-length": post(b"Content-Length: -1\r\n", b"{}"),
    "letters-content-length": post(b"Content-Length: abc\r\n", b"{}"),
    "overflowing-content-length": post(b"Content-Length: 99999999999999999999999\r\n", b"{}"),
    "bad-chunk-size": post(b"Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n"),
    "bad-chunk-size-mid-body": post(b"Transfer-Encoding: chunked\r\n", b"5\r\n" + CHAT[:5] + b"\r\nq\r\n"),
    "chunk-extension-junk": post(b"Transfer-Encoding: chunked\r\n", b"2;\x01\r\n{}\r\n0\r\n\r\n"),
    "chunked-twice": post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n"),
    "chunked-not-last": post(b"Transfer-Encoding: chunked, gzip\r\n", b"2\r\n{}\r\n0\r\n\r\n"),
    "unknown-transfer-encoding": post(b"Transfer-Encoding: gzip\r\n", b"{}"),
    "header-without-colon": post(b"BadHeader\r\nContent-Length: 2\r\n", b"{}"),
    "space-in-header-name": post(b"Bad Header: x\r\nContent-Length: 2\r\n", b"{}"),
    "nul-in-header-value": post(b"X-A: a\x00b\r\nContent-Length: 2\r\n", b"{}"),
    "bare-cr-in-header": post(b"X-A: a\rb\r\nContent-Length: 2\r\n", b"{}"),
    "obsolete-line-folding": post(b"X-A: a\r\n b\r\nContent-Length: 2\r\n", b"{}"),
    "bad-method": b"G(T /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "bad-http-version": b"GET /health HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
    "bare-lf-lines": b"GET /health HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n",
    "non-ascii-path": b"GET /h\xc3\xa9alth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "tls-client-hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "200k-url": b"GET /health?" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
}


@pytest.mark.parametrize("data", FRAMING.values(), ids=FRAMING.keys())
def test_framing_errors_are_400_envelopes(served, data):
    assert_envelope(raw(served.port, data), 400, "invalid_http_request")


def test_two_host_headers_are_400(served):
    data = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    assert_envelope(raw(served.port, data), 400, "invalid_host")


OVERSIZED = {"200k-header": b"X-A: " + b"a" * 200_000 + b"\r\n",
             "5000-headers": b"".join(b"X-%d: a\r\n" % i for i in range(5000))}


@pytest.mark.parametrize("extra", OVERSIZED.values(), ids=OVERSIZED.keys())
def test_oversized_headers_are_tolerated(served, extra):
    response = raw(served.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra + b"\r\n")
    assert response.status_code == 200


# 5. Foreign Host and Origin headers (DNS rebinding, cross-site requests).

FOREIGN_HOSTS = ["evil.example", "evil.example:%d", "127.0.0.1.nip.io:%d", "localhost.evil.example:%d", "[::2]:%d"]


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_a_foreign_host_is_refused_even_with_a_key(served, host):
    headers = {**served.auth, "Host": host.replace("%d", str(served.port))}
    assert_envelope(httpx.get(f"{served.root}/v1/models", headers=headers), 400, "invalid_host")
    assert_envelope(httpx.delete(f"{served.root}/v1/models/{MODEL}", headers=headers), 400, "invalid_host")


def test_cross_origin_management_needs_a_key(served):
    origin = {"Origin": "http://evil.example"}
    assert_envelope(httpx.delete(f"{served.root}/v1/models/{MODEL}", headers=origin), 403, "origin_not_allowed")
    preflight = httpx.options(f"{served.root}/v1/models/{MODEL}",
                              headers={**origin, "Access-Control-Request-Method": "DELETE"})
    assert_envelope(preflight, 403, "origin_not_allowed")
    keyed = httpx.options(f"{served.root}/v1/models/{MODEL}", headers={
        **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"})
    assert keyed.status_code == 200 and keyed.headers["access-control-allow-origin"] == "*"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The root URL of a --no-auth server (the one a web page can reach) with fake models."""
    records = [ModelRecord(name=name, kind="llm", source={"type": "fake"}, engine="fake")
               for name in ("victim", "spare")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STACKLET_AUTH", "false")
        home = tmp_path_factory.mktemp("hostile-open")
        with server_process(home, records) as (root, _):
            yield root
    assert "Traceback" not in (home / "server.log").read_text()


def listed(root: str) -> set[str]:
    response = httpx.get(f"{root}/v1/models")
    assert response.status_code == 200, response.text
    return {model["id"] for model in response.json()["data"]}


ATTACKS = {
    "delete": ("DELETE", "/v1/models/victim", {}, b""),
    "unload-simple-request": ("POST", "/v1/models/victim/unload", {"Content-Type": "text/plain"}, b""),
    "pull-simple-request": ("POST", "/v1/models", {"Content-Type": "text/plain"}, b'{"source": "x/y"}'),
    "patch": ("PATCH", "/v1/models/victim", {"Content-Type": "application/json"}, b'{"keep_alive": "1s"}'),
    "preflight": ("OPTIONS", "/v1/models/victim", {"Access-Control-Request-Method": "DELETE"}, b""),
    "chat": ("POST", "/v1/chat/completions", {"Content-Type": "text/plain"},
             b'{"model": "victim", "messages": [{"role": "user", "content": "hi"}]}'),
    "metrics": ("GET", "/metrics", {}, b""),
}


@pytest.mark.parametrize(("method", "path", "headers", "body"), ATTACKS.values(), ids=ATTACKS.keys())
@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1.evil.example"])
def test_a_foreign_page_gets_nothing_from_a_no_auth_server(open_server, method, path, headers, body, origin):
    response = httpx.request(method, open_server + path, content=body, headers={**headers, "Origin": origin})
    assert_envelope(response, 403, "origin_not_allowed")
    assert "access-control-allow-origin" not in response.headers
    assert listed(open_server) == {"victim", "spare"}


@pytest.mark.parametrize(("method", "path", "headers", "body"), ATTACKS.values(), ids=ATTACKS.keys())
def test_dns_rebinding_reaches_nothing(open_server, method, path, headers, body):
    port = open_server.rsplit(":", 1)[1]
    response = httpx.request(method, open_server + path, content=body,
                             headers={**headers, "Host": f"rebind.evil.example:{port}"})
    assert_envelope(response, 400, "invalid_host")
    assert listed(open_server) == {"victim", "spare"}


def test_a_page_the_server_serves_itself_still_works(open_server):
    same_origin = {"Origin": open_server}
    chat = httpx.post(f"{open_server}/v1/chat/completions", headers=same_origin, timeout=WAIT_S, json={
        "model": "spare", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert chat.status_code == 200, chat.text
    assert httpx.delete(f"{open_server}/v1/models/spare", headers=same_origin).status_code == 200
    assert listed(open_server) == {"victim"}


# 6. Huge strings: answered, and cut in the log (checked when the module's server stops).

HUGE = {
    "content": ({"messages": [{"role": "user", "content": TEN_MB}]}, 400),
    "model-name": ({"model": TEN_MB, "messages": [{"role": "user", "content": "hi"}]}, 404),
    "unknown-field": ({"junk": TEN_MB, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}, 200),
    "keep-alive": ({"keep_alive": TEN_MB, "messages": [{"role": "user", "content": "hi"}]}, 400),
    "stop": ({"stop": TEN_MB, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}, 200),
}


@pytest.mark.parametrize(("fields", "status"), HUGE.values(), ids=HUGE.keys())
def test_ten_megabyte_strings(served, fields, status):
    response = httpx.post(f"{served.root}/v1/chat/completions", headers=served.auth, timeout=WAIT_S * 5,
                          json={"model": MODEL, **fields})
    if status == 200:
        assert response.status_code == 200, response.text[:500]
    else:
        assert_envelope(response, status)


@pytest.mark.parametrize("source", [TEN_MB, "/" + TEN_MB, "owner/" + TEN_MB], ids=["bare", "path", "repo"])
def test_ten_megabyte_pull_sources(served, source):
    """Each of these once put a 10 MB traceback line in the log (a file name too long to stat)."""
    response = httpx.post(f"{served.root}/v1/models", headers=served.auth, timeout=WAIT_S, json={"source": source})
    assert_envelope(response, 400)


def test_a_megabyte_url_is_a_400(served):
    data = (f"POST /v1/models/{'y' * 1_000_000}/load HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: Bearer {served.key}\r\n\r\n").encode()
    assert_envelope(raw(served.port, data), 400, "invalid_http_request")


def test_wrong_keys_are_401_and_never_logged(served):
    for headers in ({"Authorization": f"Bearer {WRONG_KEY}"}, {"x-api-key": WRONG_KEY}):
        response = httpx.get(f"{served.root}/v1/models", headers=headers)
        assert response.status_code == 401 and WRONG_KEY not in response.text
        response = httpx.post(f"{served.root}/v1/messages", headers=headers, json={"model": MODEL})
        assert response.status_code == 401 and WRONG_KEY not in response.text


# 7. The worker's own parser, straight on its socket (what reaches it past a server that let it through).


def worker_socket(live: Live) -> Path:
    directory = socket_dir(Settings.load(environ={"STACKLET_HOME": str(live.home)}).paths.state)
    sockets = sorted(directory.glob("w*.sock"), key=lambda path: path.stat().st_mtime)
    assert sockets, f"no worker socket in {directory}"
    return sockets[-1]


def raw_unix(path: Path, data: bytes) -> httpx.Response:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(WAIT_S)
        conn.connect(str(path))
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


WORKER_BODIES = {"nested-50000": BAD_BODIES["array-nested-50000"], "surrogate": BAD_BODIES["lone-surrogate"],
                 "nan": BAD_BODIES["nan"], "1e400": BAD_BODIES["1e400"]}


@pytest.mark.parametrize("body", WORKER_BODIES.values(), ids=WORKER_BODIES.keys())
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
def test_the_worker_refuses_bad_bodies_itself(served, path, body):
    data = (f"POST {path} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    assert_envelope(raw_unix(worker_socket(served), data), 400)


def test_body_bytes_are_what_a_client_library_sends(served):
    """Control: the same requests well formed are served (so the refusals above are about the hostile part)."""
    good = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "a\U0001f600b"}], "max_tokens": 1,
                       "temperature": 0.5})  # ensure_ascii: the emoji goes as a valid surrogate pair of escapes
    response = httpx.post(f"{served.root}/v1/chat/completions", content=good.encode(), headers=served.auth,
                          timeout=WAIT_S)
    assert response.status_code == 200, response.text


# 8. Last: a worker killed with SIGKILL is counted in /metrics, and the next request restarts it.


def test_a_killed_worker_is_counted_and_restarted(live):
    os.kill(live.worker_pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT_S
    while f'stacklet_worker_crashes_total{{model="{MODEL}"}} 1' not in httpx.get(
            f"{live.root}/metrics", headers=live.auth).text:
        assert time.monotonic() < deadline, "the crash never reached /metrics"
        time.sleep(0.1)
    deadline = time.monotonic() + WAIT_S
    while True:  # the restart waits out a short backoff; a request in it may fail with a retryable 503
        try:
            live.worker_pid = still_serving(live)
            break
        except AssertionError:
            assert time.monotonic() < deadline
            time.sleep(0.5)


def test_sockets_left_by_a_killed_server_are_removed_at_start(tmp_path):
    """kill -9 of the server leaves its worker's socket (the worker exits on its own); the next start removes it."""

    env = {**os.environ, "STACKLET_HOME": str(tmp_path), "STACKLET_AUTH": "false"}
    paths = Settings.load(environ=env).paths
    registry = Registry(paths.ensure())
    registry.add(ModelRecord(name="fake", kind="llm", source={"type": "fake"}, engine="fake"))
    registry.close()
    directory = socket_dir(paths.state)

    def start() -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "runtime", "--port", str(port)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_healthy(f"http://127.0.0.1:{port}", process)
        return process, f"http://127.0.0.1:{port}"

    first, root = start()
    try:
        httpx.post(f"{root}/v1/models/fake/load", timeout=WAIT_S).raise_for_status()
        worker_pid = httpx.get(f"{root}/v1/models/fake").json()["worker"]["pid"]
        left = sorted(directory.glob("w*"))
        assert left
        first.kill()
        first.wait()
        deadline = time.monotonic() + WAIT_S
        while state.process_start_ticks(worker_pid) is not None:  # it notices its parent is gone
            assert time.monotonic() < deadline, "the orphaned worker did not exit"
            time.sleep(0.1)
        assert all(path.exists() for path in left)
        second, _ = start()
        try:
            assert not any(path.exists() for path in left)
        finally:
            second.terminate()
            second.wait(timeout=WAIT_S)
    finally:
        first.kill()
        first.wait()
