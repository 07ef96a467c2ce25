"""Image input to chat on real llama.cpp: SmolLM2-135M with a random-weight LLaVA projector (the index has no
real vision model), through the worker app and the openai client. The answers mean nothing, but they must
depend on the image: what the engine guarantees is that the image's embeddings reach the model."""

from __future__ import annotations

import base64
import io
import random
import threading
from typing import Any

import httpx
import openai
import pytest
from greedy import agree_until_a_near_tie, chat_scored, same_greedy_run
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from runtime.engines.base import SamplingParams, Usage
from runtime.spec import WorkerLimits
from runtime.worker.images_in import refused

MODEL = "SmolLM2-135M-vision"
QUESTION = "Describe this picture."
IMAGE_TOKENS = 64  # the test projector: 64x64 pixels in 8x8 patches
SCORED = {"logprobs": True, "top_logprobs": 2, "temperature": 0, "max_tokens": 12}
LIMIT = 200_000  # bytes an image may have in these tests


def png(colour: str, pattern: bool = False, size: int = 96) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), colour)
    if pattern:
        draw = ImageDraw.Draw(image)
        for x in range(0, size, 16):
            draw.rectangle([x, 0, x + 7, size], fill="white")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


RED, BLUE = png("red"), png("navy", pattern=True)


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def ask(url: str, detail: str | None = None) -> list[dict[str, Any]]:
    image: dict[str, Any] = {"url": url} if detail is None else {"url": url, "detail": detail}
    parts = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": image}]
    return [{"role": "user", "content": parts}]


def image_server() -> Starlette:
    """What the fetch tests point at: an image, a redirect to it, one too big, an HTML page, broken bytes."""
    from PIL import Image

    def route(path: str, body: bytes, media_type: str) -> Route:
        return Route(path, lambda _: Response(body, media_type=media_type))

    noise = io.BytesIO()
    Image.frombytes("RGB", (512, 512), random.randbytes(512 * 512 * 3)).save(noise, "PNG")  # 768 kB: over LIMIT
    return Starlette(routes=[
        route("/red.png", RED, "image/png"),
        route("/big.png", noise.getvalue(), "image/png"),
        route("/page.html", b"<html>not an image</html>", "text/html"),
        route("/broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png"),
        Route("/moved.png", lambda _: RedirectResponse("/red.png", status_code=302)),
    ])


@pytest.fixture(scope="module")
def images(live_server: Any) -> str:
    return live_server(image_server())


@pytest.fixture(scope="module")
def open_url(live_server: Any, text_app: Any, smollm_vision_engine: Any) -> str:
    """A worker whose operator allows fetching from private addresses (the image server is on loopback)."""
    limits = WorkerLimits(max_upload_bytes=LIMIT, image_fetch_private=True)
    return live_server(text_app(smollm_vision_engine, limits)) + "/v1"


@pytest.fixture(scope="module")
def base_url(live_server: Any, text_app: Any, smollm_vision_engine: Any) -> str:
    """The default: no fetches from loopback, link-local or private addresses."""
    return live_server(text_app(smollm_vision_engine, WorkerLimits(max_upload_bytes=LIMIT))) + "/v1"


def post(base_url: str, messages: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(base_url + "/chat/completions", json={"model": MODEL, "messages": messages, "max_tokens": 4},
                      timeout=60)


def scored(client: openai.OpenAI, messages: list[dict[str, Any]]) -> Any:
    return client.chat.completions.create(model=MODEL, messages=messages, **SCORED)


def test_an_image_changes_the_answer(client: openai.OpenAI) -> None:
    red, blue = scored(client, ask(data_url(RED))), scored(client, ask(data_url(BLUE)))
    assert red.choices[0].message.content != blue.choices[0].message.content
    again = scored(client, ask(data_url(RED)))
    assert same_greedy_run(chat_scored(again.choices[0].logprobs), chat_scored(red.choices[0].logprobs))
    assert again.choices[0].message.content == red.choices[0].message.content


def test_usage_counts_the_image_tokens(client: openai.OpenAI) -> None:
    text_only = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                               max_tokens=1)
    with_image = client.chat.completions.create(model=MODEL, messages=ask(data_url(RED), "low"), max_tokens=1)
    extra = with_image.usage.prompt_tokens - text_only.usage.prompt_tokens
    assert IMAGE_TOKENS <= extra <= IMAGE_TOKENS + 2  # the image, and the line break that joins it to the text
    assert with_image.usage.total_tokens == with_image.usage.prompt_tokens + with_image.usage.completion_tokens


def test_the_prefix_cache_reuses_an_image_only_for_the_same_image(client: openai.OpenAI) -> None:
    def cached(image: bytes) -> tuple[int, int]:
        messages = [{"role": "system", "content": "You look at pictures."}, *ask(data_url(image))]
        usage = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1).usage
        return usage.prompt_tokens_details.cached_tokens, usage.prompt_tokens

    cached(RED)
    same, total = cached(RED)
    assert same == total - 1  # all but the last token, which is always evaluated again
    other, _ = cached(png("green"))
    assert 0 < other < total - IMAGE_TOKENS  # the shared text before the image, none of the image


def test_images_batch_with_text_requests(smollm_vision_engine: Any) -> None:
    """An image request and a text request decoded at the same time give what each gives alone."""
    from PIL import Image

    engine = smollm_vision_engine
    text_prompt = engine.tokenize(engine.render_chat([{"role": "user", "content": "Count to five."}], None))
    marker = "<__test_image__>"
    rendered = engine.render_chat([{"role": "user", "content": f"{QUESTION}\n{marker}"}], None)
    picture = Image.open(io.BytesIO(BLUE)).convert("RGB")
    image_prompt, spans = engine.image_prompt(rendered, marker, [picture])
    assert len(spans) == 1 and spans[0].end - spans[0].start == IMAGE_TOKENS
    assert all(token < 0 for token in image_prompt[spans[0].start:spans[0].end])  # placeholders
    params = SamplingParams(max_tokens=12, temperature=0, logprobs=2)

    def run(prompt: list[int], images: list[Any] | None, out: list[Any]) -> None:
        stream = engine.generate(prompt, params, 1, Usage(), threading.Event(), images=images)
        out.extend(lp for delta in stream for lp in delta.logprobs)

    alone_text: list[Any] = []
    alone_image: list[Any] = []
    run(text_prompt, None, alone_text)
    run(image_prompt, spans, alone_image)
    both_text: list[Any] = []
    both_image: list[Any] = []
    threads = [threading.Thread(target=run, args=(text_prompt, None, both_text)),
               threading.Thread(target=run, args=(image_prompt, spans, both_image))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert both_text and both_image
    agree_until_a_near_tie(both_text, alone_text)
    agree_until_a_near_tie(both_image, alone_image)


def test_an_http_image_url_is_fetched(open_url: str, images: str) -> None:
    client = openai.OpenAI(base_url=open_url, api_key="none", max_retries=0)
    fetched = scored(client, ask(images + "/red.png"))
    inline = scored(client, ask(data_url(RED)))
    assert same_greedy_run(chat_scored(fetched.choices[0].logprobs), chat_scored(inline.choices[0].logprobs))


@pytest.mark.parametrize(("path", "code", "words"), [
    ("/moved.png", "image_fetch_failed", "redirects"),
    ("/big.png", "image_too_large", "larger than"),
    ("/page.html", "invalid_image", "not an image"),
    ("/broken.png", "invalid_image", "could not be decoded"),
])
def test_fetch_refusals_are_400s(open_url: str, images: str, path: str, code: str, words: str) -> None:
    response = post(open_url, ask(images + path))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"]
    assert error["param"] == "messages[0].content[1].image_url.url"


def test_loopback_urls_are_refused_unless_the_operator_allows_them(base_url: str, images: str) -> None:
    for url in (images + "/red.png", "http://localhost:9/x.png", "http://[::1]:9/x.png"):
        response = post(base_url, ask(url))
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "image_url_refused"
        assert "image_fetch_private" in response.json()["error"]["message"]


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "0.0.0.0", "224.0.0.1"])
def test_private_and_special_addresses_are_refused(address: str) -> None:
    import ipaddress

    assert refused(ipaddress.ip_address(address), allow_private=False) is not None


def test_public_addresses_pass_and_the_setting_allows_private_ones() -> None:
    import ipaddress

    assert refused(ipaddress.ip_address("93.184.216.34"), allow_private=False) is None
    assert refused(ipaddress.ip_address("2606:4700::1111"), allow_private=False) is None
    assert refused(ipaddress.ip_address("10.1.2.3"), allow_private=True) is None
    assert refused(ipaddress.ip_address("0.0.0.0"), allow_private=True) is not None


@pytest.mark.parametrize(("url", "code"), [
    ("data:text/plain;base64,aGVsbG8=", "invalid_image_url"),
    ("data:image/png;base64,***", "invalid_image_url"),
    ("data:image/png;base64," + base64.b64encode(b"not a png").decode(), "invalid_image"),
    ("file:///etc/passwd", "invalid_image_url"),
    ("ftp://example.com/a.png", "invalid_image_url"),
])
def test_bad_image_urls_are_400s(base_url: str, url: str, code: str) -> None:
    response = post(base_url, ask(url))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code


def test_detail_is_checked(base_url: str) -> None:
    response = post(base_url, ask(data_url(RED), "huge"))
    assert response.status_code == 400
    assert "detail" in response.json()["error"]["param"]


def test_a_model_without_vision_refuses_images(live_server: Any, text_app: Any, smollm_engine: Any) -> None:
    client = openai.OpenAI(base_url=live_server(text_app(smollm_engine)) + "/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=ask(data_url(RED)), max_tokens=4)
    assert "does not accept image input" in caught.value.message
