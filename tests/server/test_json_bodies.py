"""Hostile JSON bodies are 400s in the OpenAI envelope on every route that parses one (runtime/http/jsonbody.py):
nesting past the limit, lone surrogates, non-finite numbers, bytes that are not UTF-8."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile
from test_server import JSON_PARSE_MESSAGE, StubScheduler, make_client

from runtime.config import Settings
from runtime.errors import InvalidRequestError
from runtime.http.errors import install_error_handlers
from runtime.http.jsonbody import MAX_JSON_DEPTH, JSONBodyRoute, parse_json_body
from runtime.http.multipart import form_to_dict
from runtime.store.keys import KeyStore

DEEP = b'{"model": "fake-llm", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
CHAT = b'{"model": "fake-llm", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
# Every server route that reads a JSON body: method, path.
JSON_ROUTES = [("POST", "/v1/chat/completions"), ("POST", "/v1-openai/chat/completions"), ("POST", "/v1/completions"),
               ("POST", "/v1/embeddings"), ("POST", "/v1/images/generations"), ("POST", "/v1/audio/speech"),
               ("POST", "/v1/audio/transcriptions"), ("POST", "/v1/images/edits"), ("POST", "/v1/models"),
               ("POST", "/v1/models/fake-llm/load"), ("PATCH", "/v1/models/fake-llm"), ("POST", "/v1/responses"),
               ("POST", "/v1/messages")]


class Body(BaseModel):
    text: str


def refusal(body: bytes) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as refused:
        parse_json_body(body)
    return refused.value


@pytest.mark.parametrize(("body", "message"), [
    (b"[" * 50_000 + b"]" * 50_000, "The JSON body is nested 50000 levels deep; the limit is 64. Send a flatter body."),
    (b'{"a": ' * 65 + b"1" + b"}" * 65, "The JSON body is nested 65 levels deep; the limit is 64. Send a flatter "
                                         "body."),
    (b'{"x": Infinity}', "The JSON body contains Infinity, which is not a number JSON allows. Send finite numbers "
                         "only."),
    (b'{"x": -Infinity}', "The JSON body contains -Infinity, which is not a number JSON allows. Send finite numbers "
                          "only."),
    (b'{"x": NaN}', "The JSON body contains NaN, which is not a number JSON allows. Send finite numbers only."),
    (b'{"x": 1e400}', "The JSON body contains the number 1e400, which is too large for a float. Send finite numbers "
                      "only."),
    (b'{"x": "a\xed\xa0\x80"}', "The request body is not valid UTF-8 (byte 8). Send JSON encoded as UTF-8."),
    (b'[1, 2]', JSON_PARSE_MESSAGE),
    (b'{"x": 1', JSON_PARSE_MESSAGE),
])
def test_hostile_bodies_are_refused_with_the_reason(body, message):
    assert refusal(body).message == message


@pytest.mark.parametrize(("body", "param", "escape"), [
    (CHAT, "messages[0].content", "\\ud800"),
    (b'{"input": ["ok", "\\udc00"]}', "input[1]", "\\udc00"),
    (b'{"\\ud800": 1}', "\\ud800", "\\ud800"),  # the key itself, echoed escaped: the envelope must encode
    (b'{"a": {"b": "x\\udfff"}}', "a.b", "\\udfff"),
])
def test_lone_surrogates_name_the_param(body, param, escape):
    refused = refusal(body)
    assert refused.param == param
    assert refused.message == (f"Invalid value for '{param}': the text contains a lone UTF-16 surrogate ({escape}), "
                               "which is not valid Unicode. Send valid UTF-8 text.")
    refused.message.encode()


@pytest.mark.parametrize(("body", "value"), [
    (b'{"a": ' * MAX_JSON_DEPTH + b"1" + b"}" * (MAX_JSON_DEPTH - 1) + b"}", None),  # exactly at the limit
    (b'{"x": "' + b"[" * 1000 + b'"}', "[" * 1000),  # brackets in strings do not nest
    (b'{"x": "\\\\ud800"}', "\\ud800"),  # an escaped backslash, then plain text
    (b'{"x": "\\ud83d\\ude00"}', "\U0001f600"),  # a valid surrogate pair
    (b'\xef\xbb\xbf{"x": 1.5e300}', 1.5e300),  # a UTF-8 byte order mark, a large finite number
])
def test_valid_bodies_parse(body, value):
    parsed = parse_json_body(body)
    if value is not None:
        assert parsed == {"x": value}


@pytest.fixture
def scheduler() -> StubScheduler:
    return StubScheduler()


@pytest.fixture
def client(scheduler: StubScheduler) -> Iterator[TestClient]:
    settings = Settings.load()
    key, _ = KeyStore(settings.paths).create("test", scope="admin")
    with make_client(settings, scheduler, key) as test_client:
        yield test_client


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
@pytest.mark.parametrize("body", [DEEP, b'{"model": "fake-llm", "ctx_size": Infinity, "x": NaN}',
                                  b'{"model": "fake-llm", "source": "a\\ud800", "messages": "a\\udc00"}'],
                         ids=["deep", "non-finite", "surrogate"])
def test_every_json_route_answers_400(client, scheduler, method, path, body):
    response = client.request(method, path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert scheduler.calls == []  # refused before a model is woken


def test_a_pydantic_body_route_parses_with_the_same_rules():
    """The workers' routes take pydantic bodies; JSONBodyRoute puts FastAPI's parsing through parse_json_body."""
    router = APIRouter(route_class=JSONBodyRoute)

    @router.post("/echo")
    async def echo(body: Body) -> dict[str, str]:
        return {"text": body.text}

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    with TestClient(app) as worker:
        assert worker.post("/echo", json={"text": "hi"}).json() == {"text": "hi"}
        for body in (b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"text": "a\\ud800"}', b'{"text": NaN}'):
            response = worker.post("/echo", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400, response.text
            assert response.json()["error"]["type"] == "invalid_request_error"
        surrogate = worker.post("/echo", content=b'{"text": "a\\ud800"}', headers={"content-type": "application/json"})
        assert surrogate.json()["error"]["param"] == "text"


def test_multipart_fields_with_lone_surrogates_are_refused():
    for form in (FormData([("prompt", "a\ud800")]), FormData([("a\udc00", "x")]),
                 FormData([("image", UploadFile(None, filename="x\ud800.png"))])):  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError) as refused:
            form_to_dict(form)
        assert "lone UTF-16 surrogate" in refused.value.message
        refused.value.message.encode()


def test_a_multipart_charset_that_makes_surrogates_is_a_400(client, scheduler):
    body = (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nfake-whisper\r\n'
            b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na\\ud800\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n--b--\r\n')
    response = client.post("/v1/audio/transcriptions", content=body,
                           headers={"content-type": "multipart/form-data; boundary=b; charset=unicode_escape"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "prompt"
    assert scheduler.calls == []
