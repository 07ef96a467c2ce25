"""Multipart forms as the SDKs send them: `key[]` lists, `key[sub]` objects, and the `model` lookup."""

from __future__ import annotations

import io
from collections.abc import Iterator

import openai
import pytest
from PIL import Image
from starlette.datastructures import FormData, UploadFile
from test_server import StubScheduler, make_client

from runtime.config import Settings
from runtime.http.multipart import form_to_dict
from runtime.store.keys import KeyStore


def upload(name: str) -> UploadFile:
    return UploadFile(io.BytesIO(b"data"), filename=name)


def test_form_to_dict_shapes():
    first, second, single = upload("a.png"), upload("b.png"), upload("c.wav")
    form = FormData([
        ("model", "m"), ("stream", "false"), ("image[]", first), ("image[]", second), ("file", single),
        ("timestamp_granularities[]", "word"), ("chunking_strategy[type]", "server_vad"),
        ("chunking_strategy[threshold]", "0.5"), ("tag", "x"), ("tag", "y"),
    ])
    assert form_to_dict(form) == {
        "model": "m", "stream": "false", "image": [first, second], "file": single,
        "timestamp_granularities": ["word"], "chunking_strategy": {"type": "server_vad", "threshold": "0.5"},
        "tag": ["x", "y"],
    }


@pytest.fixture
def scheduler() -> StubScheduler:
    return StubScheduler()


@pytest.fixture
def oai(scheduler: StubScheduler) -> Iterator[openai.OpenAI]:
    settings = Settings.load()
    key, _ = KeyStore(settings.paths).create("test")
    with make_client(settings, scheduler) as client:
        yield openai.OpenAI(base_url="http://testserver/v1-openai", api_key=key, http_client=client,
                            max_retries=0)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_edit_with_several_images_reaches_the_scheduler(oai, scheduler):
    oai.images.with_raw_response.edit(model="fake-image", image=[("a.png", png()), ("b.png", png())],
                                      prompt="a cat")
    call = scheduler.calls[0]
    assert (call["model"], call["path"]) == ("fake-image", "/v1/images/edits")
    assert call["body"].count(b'name="image[]"') == 2


def test_multipart_validation_errors_are_openai_errors(oai, scheduler):
    with pytest.raises(openai.BadRequestError) as invalid:
        oai.audio.transcriptions.create(model="fake-whisper", file=("a.wav", b"RIFF"),
                                        timestamp_granularities=["fortnight"])
    assert invalid.value.param == "timestamp_granularities[0]"
    with pytest.raises(openai.NotFoundError):
        oai.images.edit(model="nope", image=("a.png", png()), prompt="x")
    assert scheduler.calls == []


def test_multipart_to_a_model_of_the_wrong_kind(oai, scheduler):
    with pytest.raises(openai.BadRequestError) as wrong:
        oai.audio.transcriptions.create(model="fake-image", file=("a.wav", b"RIFF"))
    assert wrong.value.param == "model"
    assert scheduler.calls == []


def test_broken_multipart_is_a_400_envelope(scheduler):
    settings = Settings.load()
    key, _ = KeyStore(settings.paths).create("test")
    with make_client(settings, scheduler, key) as client:
        response = client.post("/v1/audio/transcriptions", content=b"--xyz\r\nnot a part",
                               headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_multipart_needs_a_key(scheduler):
    with make_client(Settings.load(), scheduler) as client:
        assert client.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"x")}).status_code == 401
