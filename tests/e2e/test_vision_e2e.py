"""Images through a real server to a real worker process: SmolLM2 with its random-weight LLaVA projector.
The models list says it takes images; chat, OpenAI Responses (input_image) and Anthropic Messages (image
blocks) all reach the projector, so a different image gives a different answer on each."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from serverproc import local_record, server_process

MODEL = "smol-vision"
QUESTION = "Describe this picture."


def png(colour: str) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


RED, BLUE = png("red"), png("blue")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm_gguf: Path, smollm_mmproj: Path) -> Iterator[Any]:
    record = local_record(MODEL, "llm", {"model": smollm_gguf, "mmproj": smollm_mmproj},
                          metadata={"has_mmproj": True})
    text_only = local_record("smol", "llm", {"model": smollm_gguf})
    with server_process(tmp_path_factory.mktemp("vision"), [record, text_only]) as (root, key):
        yield root, key


@pytest.fixture
def oai(server: tuple[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=server[1], max_retries=0)


def test_the_models_list_says_which_model_takes_images(server: tuple[str, str]) -> None:
    root, key = server
    models = httpx.get(root + "/v1/models", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    capabilities = {m["id"]: m["meta"]["capabilities"] for m in models}
    assert "vision" in capabilities[MODEL]
    assert "vision" not in capabilities["smol"]


def test_chat_image_parts(oai: openai.OpenAI) -> None:
    def answer(image: str) -> str:
        content = [{"type": "text", "text": QUESTION},
                   {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}", "detail": "auto"}}]
        result = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}],
                                             temperature=0, max_tokens=12)
        return result.choices[0].message.content or ""

    assert answer(RED) != answer(BLUE)


def test_responses_input_image(oai: openai.OpenAI) -> None:
    def answer(image: str) -> Any:
        content = [{"type": "input_text", "text": QUESTION},
                   {"type": "input_image", "image_url": f"data:image/png;base64,{image}", "detail": "low"}]
        return oai.responses.create(model=MODEL, input=[{"role": "user", "content": content}], temperature=0,
                                    max_output_tokens=16)

    red, blue = answer(RED), answer(BLUE)
    assert red.output_text != blue.output_text
    assert red.usage.input_tokens > 64  # the image's tokens are counted


def test_anthropic_image_blocks(server: tuple[str, str]) -> None:
    claude = anthropic.Anthropic(base_url=server[0], api_key=server[1], max_retries=0)

    def answer(image: str) -> str:
        content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
                   {"type": "text", "text": QUESTION}]
        message = claude.messages.create(model=MODEL, max_tokens=16, extra_body={"temperature": 0},
                                         messages=[{"role": "user", "content": content}])
        return "".join(block.text for block in message.content if block.type == "text")

    assert answer(RED) != answer(BLUE)


def test_a_text_model_refuses_images(oai: openai.OpenAI) -> None:
    content = [{"type": "text", "text": QUESTION},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{RED}"}}]
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="smol", messages=[{"role": "user", "content": content}], max_tokens=4)
    assert "does not accept image input" in caught.value.message
