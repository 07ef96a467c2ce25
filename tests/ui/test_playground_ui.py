"""The web playground in real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium)
against one real server with the small real models: sign-in through `stacklet open`, the models page with
a live pull from a local hub, a streamed chat answer, speech, transcription and embeddings. Every test
fails on a console error the page did not expect. Screenshots go to /tmp/playground-shots/."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hubserver import FakeHub, tiny_gguf
from serverproc import local_record, server_process

from runtime.config import Settings
from runtime.store.keys import KeyStore
from runtime.store.registry import ModelRecord, connect

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
FOX = Path(__file__).parent.parent / "data" / "quick-brown-fox.wav"
SHOTS = Path("/tmp/playground-shots")
WAIT_S = 240  # an upper bound for "eventually" on a loaded machine (models load on first use), never a timing
PULL_STALL = 2_000_000  # bytes the hub sends of the pulled file before it hangs


class Server:
    def __init__(self, root: str, key: str, home: Path, hub: FakeHub) -> None:
        self.root, self.key, self.home, self.hub = root, key, home, hub


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm_gguf: Path, smollm_mmproj: Path, minilm_gguf: Path,
           piper_voice: Path, whisper_dir: Path) -> Iterator[Server]:
    records = [local_record("smol", "llm", {"model": smollm_gguf}),
               local_record("smol-vision", "llm", {"model": smollm_gguf, "mmproj": smollm_mmproj},
                            metadata={"has_mmproj": True}),
               local_record("minilm", "embedding", {"model": minilm_gguf}),
               local_record("joe", "speech", {"model": piper_voice, "config": Path(f"{piper_voice}.json")}),
               local_record("tiny.en", "transcription", {"model": whisper_dir / "model.bin"}),
               # Images on the fake engine (the page's plumbing: streamed partials, uploads, the painted mask);
               # a real diffusion model is too slow for a browser test on a small CPU.
               ModelRecord(name="sketch", kind="image", source={"type": "fake"}, engine="fake")]
    home = tmp_path_factory.mktemp("playground")
    with FakeHub() as hub, pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", hub.url)  # the server pulls from the local hub
        with server_process(home, records) as (root, key):
            yield Server(root, key, home, hub)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860",
                     "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                     # a microphone that plays a tone, allowed without asking
                     "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture(autouse=True)
def no_console_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "browser" in request.fixturenames:
        assert console_errors(request.getfixturevalue("browser")) == []


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d) or None)


def open_view(driver: Any, server: Server, view: str, key: str | None = None) -> None:
    """A fresh page signed in through the URL fragment (as `stacklet open` does), showing `view`."""
    driver.get("about:blank")
    driver.get(f"{server.root}/playground#key={key or server.key}")
    wait_for(driver, lambda d: by_id(d, "nav").is_displayed())
    driver.execute_script("location.hash = arguments[0]", view)
    wait_for(driver, lambda d: by_id(d, f"view-{view}").is_displayed())


def choose(driver: Any, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    wait_for(driver, lambda d: value in [o.get_attribute("value") for o in Select(by_id(d, select_id)).options])
    Select(by_id(driver, select_id)).select_by_value(value)


def fill(driver: Any, element_id: str, text: str) -> None:
    field = by_id(driver, element_id)
    field.clear()
    field.send_keys(text)


def table_rows(driver: Any, table: str) -> dict[str, list[str]]:
    """A table's rows, by their first cell, as the text of their cells, read at one instant."""
    return driver.execute_script("""
        return Object.fromEntries([...document.querySelectorAll(`#${arguments[0]} tbody tr`)].map(
            (row) => [row.cells[0].innerText, [...row.cells].map((cell) => cell.innerText)]));""", table)


def model_rows(driver: Any) -> dict[str, list[str]]:
    """The models table: model, kind, size, state, actions."""
    return table_rows(driver, "models-table")


def shot(driver: Any, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def test_the_page_loads_without_a_key_under_a_strict_content_security_policy(server: Server) -> None:
    for path in ("/", "/playground"):
        page = httpx.get(server.root + path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
        assert re.findall(r"<script[^>]*>", page.text) == ['<script type="module" src="/playground/js/main.js">']
        assert re.findall(r"\son\w+=", page.text) == []  # no inline script, no inline handlers
    script = httpx.get(f"{server.root}/playground/js/main.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    for missing in ("/playground/js/nothing.js", "/playground/../store/keys.py", "/playground/%2e%2e/app.py"):
        assert httpx.get(server.root + missing).status_code == 404
    assert httpx.get(f"{server.root}/v1/models").status_code == 401  # the data behind it still needs a key
    scripts = (Path(__file__).parents[2] / "runtime/server/playground/js").glob("*.js")
    assert [path.name for path in scripts if "innerHTML" in path.read_text()] == []  # text goes in as text


def test_stacklet_open_signs_the_browser_in_with_a_key_only_in_the_fragment(server: Server, browser: Any,
                                                                            tmp_path: Path) -> None:
    link_file = tmp_path / "link"
    opener = tmp_path / "opener.py"
    opener.write_text(f"import sys\nopen({str(link_file)!r}, 'w').write(sys.argv[1])\n")
    env = {**os.environ, "STACKLET_HOME": str(server.home), "BROWSER": f"{sys.executable} {opener} %s"}
    result = subprocess.run([sys.executable, "-m", "cli", "open"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    link = link_file.read_text()
    page, _, fragment = link.partition("#key=")
    assert page == f"{server.root}/playground" and fragment.startswith("sk-stacklet-")
    assert fragment not in result.stdout  # the terminal shows the page, not the key
    browser.get(link)
    wait_for(browser, lambda d: by_id(d, "view-chat").is_displayed())
    assert browser.current_url == f"{server.root}/playground#chat"  # the key left the address bar
    assert browser.execute_script("return localStorage.getItem('stacklet.apiKey')") == fragment
    choose(browser, "chat-model", "smol")
    assert fragment not in (server.home / "server.log").read_text()


def test_a_refused_key_is_asked_for_again(server: Server, browser: Any) -> None:
    browser.get("about:blank")
    browser.get(f"{server.root}/playground#key=sk-stacklet-not-a-key")
    status = by_id(browser, "signin-status")
    wait_for(browser, lambda d: "refused" in status.text)
    assert by_id(browser, "view-signin").is_displayed() and not by_id(browser, "nav").is_displayed()
    assert browser.execute_script("return localStorage.getItem('stacklet.apiKey')") is None
    assert [" 401 " in message for message in console_errors(browser)] == [True]  # the refused call, only


def test_a_key_that_expires_while_the_page_is_open_sends_it_back_to_sign_in(server: Server, browser: Any) -> None:
    paths = Settings.load(environ={"STACKLET_HOME": str(server.home)}).paths
    key, _ = KeyStore(paths).create("brief", expires_days=1, scope="admin")
    open_view(browser, server, "models", key)
    connect(paths.database).execute("UPDATE keys SET expires = ? WHERE name = 'brief'", (int(time.time()) - 1,))
    wait_for(browser, lambda d: by_id(d, "view-signin").is_displayed())  # at the page's next poll of the models
    assert "expired" in by_id(browser, "signin-status").text
    assert browser.execute_script("return localStorage.getItem('stacklet.apiKey')") is None
    refused = console_errors(browser)
    assert refused and all(" 401 " in message for message in refused)


def test_the_models_page_lists_every_model_and_pulls_with_live_progress(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    open_view(browser, server, "models")
    wait_for(browser, lambda d: len(model_rows(d)) == 6)
    rows = model_rows(browser)
    assert {name: cells[1] for name, cells in rows.items()} == {
        "smol": "llm", "smol-vision": "llm", "minilm": "embedding", "joe": "speech", "tiny.en": "transcription",
        "sketch": "image"}
    assert all(cells[3] in ("available", "loading", "loaded") for cells in rows.values())
    assert rows["smol"][2].endswith(" MB") and rows["sketch"][2] == "-"
    route = httpx.put(f"{server.root}/v1/routes/fast", json={"targets": ["smol"], "fallbacks": ["minilm"]},
                      headers={"Authorization": f"Bearer {server.key}"})
    assert route.status_code == 200, route.text
    wait_for(browser, lambda d: by_id(d, "routes-panel").is_displayed())  # the page polls while it shows
    assert table_rows(browser, "routes-table") == {"fast": ["fast", "smol healthy", "minilm healthy"]}
    assert model_rows(browser)["fast"][1:] == ["route", "-", "available", "Delete"]
    chat_models = "return [...document.querySelectorAll('#chat-model option')].map((option) => option.value)"
    assert browser.execute_script(chat_models) == ["smol", "smol-vision", "fast"]  # a route serves what its target does
    shot(browser, "models")

    data = tiny_gguf(extra=os.urandom(PULL_STALL * 2))
    server.hub.add_repo("org/Tiny-GGUF", {"tiny-Q4_K_M.gguf": data})
    server.hub.state.stall_after[hashlib.sha256(data).hexdigest()] = PULL_STALL
    fill(browser, "pull-source", "org/Tiny-GGUF")
    fill(browser, "pull-name", "tiny")
    by_id(browser, "pull-go").click()
    bar = by_id(browser, "pull-bar")
    wait_for(browser, lambda d: 0 < float(bar.get_attribute("value")) < 1)  # the hub is stalled mid-file
    shot(browser, "pull-progress")
    by_id(browser, "pull-stop").click()
    wait_for(browser, lambda d: "cancelled" in by_id(d, "models-status").text)
    by_id(browser, "pull-go").click()  # resumes, and this time the hub sends everything
    wait_for(browser, lambda d: "Pulled tiny" in by_id(d, "models-status").text)
    assert float(bar.get_attribute("value")) == 1
    wait_for(browser, lambda d: "tiny" in model_rows(d))

    delete = browser.find_element(By.CSS_SELECTOR, "tr[data-model='tiny'] button.danger")
    delete.click()
    wait_for(browser, lambda d: by_id(d, "confirm-dialog").is_displayed())
    browser.find_element(By.CSS_SELECTOR, "#confirm-dialog button[value=cancel]").click()
    assert "tiny" in model_rows(browser)
    browser.find_element(By.CSS_SELECTOR, "tr[data-model='tiny'] button.danger").click()
    wait_for(browser, lambda d: by_id(d, "confirm-dialog").is_displayed())
    by_id(browser, "confirm-ok").click()
    wait_for(browser, lambda d: "tiny" not in model_rows(d))
    browser.find_element(By.CSS_SELECTOR, "button[aria-label='Delete fast']").click()
    wait_for(browser, lambda d: by_id(d, "confirm-dialog").is_displayed())
    assert "Its targets stay" in by_id(browser, "confirm-text").text
    by_id(browser, "confirm-ok").click()
    wait_for(browser, lambda d: "fast" not in model_rows(d) and not by_id(d, "routes-panel").is_displayed())


def test_an_inference_key_is_told_that_managing_models_needs_an_admin_key(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    key, _ = KeyStore(Settings.load(environ={"STACKLET_HOME": str(server.home)}).paths).create("viewer")
    open_view(browser, server, "models", key)
    load = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "tr[data-model='minilm'] button"))
    load.click()
    wait_for(browser, lambda d: "admin key" in by_id(d, "models-status").text)
    assert "stacklet keys create --admin" in by_id(browser, "models-status").text
    refused = console_errors(browser)  # the load, and the list of remotes (asked for once)
    assert len(refused) == 2 and all(" 403 " in message for message in refused)


def test_chat_streams_an_answer_with_stats_and_code_without_the_key(server: Server, browser: Any) -> None:
    open_view(browser, server, "chat")
    choose(browser, "chat-model", "smol")
    fill(browser, "chat-system", "You are a friendly assistant. Use Markdown.")
    fill(browser, "chat-max-tokens", "48")
    fill(browser, "chat-input", "What is the capital of France? Answer in one sentence.")
    by_id(browser, "chat-send").click()
    stats = wait_for(browser, lambda d: d.find_elements("css selector", ".msg.assistant .stats"))
    assert "tok/s" in stats[0].text and "TTFT" in stats[0].text
    answer = browser.find_element("css selector", ".msg.assistant .body").text
    assert answer.strip()
    assert by_id(browser, "chat-send").is_displayed() and not by_id(browser, "chat-stop").is_displayed()
    shot(browser, "chat")

    by_id(browser, "chat-code").click()
    code = by_id(browser, "code-text")
    assert "$STACKLET_API_KEY" in code.text and '"model": "smol"' in code.text and server.key not in code.text
    for lang, needle in (("python", 'os.environ["STACKLET_API_KEY"]'), ("node", "process.env.STACKLET_API_KEY")):
        browser.find_element("css selector", f"#code-dialog [data-lang={lang}]").click()
        assert needle in code.text and server.key not in code.text
    shot(browser, "chat-code")
    browser.find_element("css selector", "#code-dialog button[value=close]").click()


def test_a_required_tool_call_is_shown_as_a_tool_call_block(server: Server, browser: Any) -> None:
    open_view(browser, server, "chat")
    choose(browser, "chat-model", "smol")
    browser.find_element("css selector", "details.tools summary").click()
    fill(browser, "chat-tools", json.dumps([{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                              "required": ["city"]}}}]))
    choose(browser, "chat-tool-choice", "required")
    fill(browser, "chat-input", "What is the weather in Paris?")
    by_id(browser, "chat-send").click()
    block = wait_for(browser, lambda d: d.find_elements("css selector", ".msg.assistant .stats")
                     and d.find_element("css selector", ".msg.assistant .tool-call"))
    assert block.find_element("css selector", "strong").text == "Tool call: get_weather"
    arguments = json.loads(block.find_element("css selector", "pre").text)
    assert set(arguments) == {"city"}  # the grammar holds the call to the schema
    fill(browser, "chat-tools", "[not json")
    fill(browser, "chat-input", "Again?")
    by_id(browser, "chat-send").click()
    assert by_id(browser, "chat-status").text.startswith("Tools are not valid JSON")


def test_reasoning_and_tool_calls_stream_into_their_own_blocks(server: Server, browser: Any) -> None:
    open_view(browser, server, "chat")
    blocks = browser.execute_async_script("""
        const done = arguments[0];
        import('/playground/js/chat.js').then(({ Answer }) => {
            const node = document.createElement('li');
            node.append(Object.assign(document.createElement('div'), { className: 'body' }));
            const answer = new Answer(node);
            const delta = (d) => answer.add({ choices: [{ index: 0, delta: d }] });
            delta({ reasoning_content: 'The user wants <b>' });
            delta({ reasoning_content: ' a city.' });
            delta({ content: 'Let me check.' });
            delta({ tool_calls: [{ index: 0, id: 'call_1', function: { name: 'get_', arguments: '{"city":' } }] });
            delta({ tool_calls: [{ index: 0, function: { name: 'weather', arguments: ' "Paris"}' } }] });
            answer.add({ choices: [], usage: { completion_tokens: 5 } });
            answer.finish();
            done([node.querySelector('details summary').textContent, node.querySelector('.reasoning-text').textContent,
                  node.querySelector('.body p').textContent, node.querySelector('.tool-call strong').textContent,
                  node.querySelector('.tool-call pre').textContent, node.querySelector('.stats').textContent,
                  node.querySelectorAll('b').length, answer.message().tool_calls[0].function.name]);
        });
    """)
    assert blocks[:5] == ["Reasoning", "The user wants <b> a city.", "Let me check.", "Tool call: get_weather",
                          '{"city": "Paris"}']
    assert blocks[5].startswith("5 tokens") and blocks[6:] == [0, "get_weather"]


def test_a_model_with_a_vision_projector_takes_an_image_with_the_message(server: Server, browser: Any,
                                                                        tmp_path: Path) -> None:
    from PIL import Image

    open_view(browser, server, "chat")
    choose(browser, "chat-model", "smol")
    assert not by_id(browser, "chat-attach").is_displayed()  # a text-only model takes no image
    choose(browser, "chat-model", "smol-vision")
    assert by_id(browser, "chat-attach").is_displayed()
    picture = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(picture)
    by_id(browser, "chat-image").send_keys(str(picture))
    fill(browser, "chat-max-tokens", "12")
    fill(browser, "chat-input", "Describe this picture.")
    by_id(browser, "chat-send").click()
    wait_for(browser, lambda d: d.find_elements("css selector", ".msg.assistant .stats"))
    attachment = browser.find_element("css selector", ".msg.user img.attachment")
    assert attachment.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.find_elements("css selector", ".msg.error") == []
    by_id(browser, "chat-code").click()
    assert '"type": "image_url"' in by_id(browser, "code-text").text
    browser.find_element("css selector", "#code-dialog button[value=close]").click()


def test_the_stop_button_aborts_a_streaming_answer(server: Server, browser: Any) -> None:
    open_view(browser, server, "chat")
    choose(browser, "chat-model", "smol")
    fill(browser, "chat-max-tokens", "2000")
    fill(browser, "chat-input", "Write a very long story about a dragon.")
    browser.execute_script("document.getElementById('chat-send').click(); document.getElementById('chat-stop').click()")
    wait_for(browser, lambda d: by_id(d, "chat-status").text == "Stopped.")
    assert by_id(browser, "chat-send").is_displayed()


def test_model_text_is_shown_as_text_never_as_markup(server: Server, browser: Any) -> None:
    open_view(browser, server, "chat")
    rendered = browser.execute_async_script("""
        const done = arguments[0];
        import('/playground/js/markdown.js').then(({ renderMarkdown }) => {
            const box = document.createElement('div');
            const text = '**bold** <img src=x onerror=alert(1)>\\n```html\\n<script>alert(2)</script>\\n```';
            box.append(renderMarkdown(text));
            done([box.querySelectorAll('img, script').length, box.querySelector('strong').textContent,
                  box.querySelector('pre code').textContent, box.textContent]);
        });
    """)
    assert rendered[:3] == [0, "bold", "<script>alert(2)</script>"]
    assert "<img src=x onerror=alert(1)>" in rendered[3]


def test_speech_gets_a_playable_source_and_a_download(server: Server, browser: Any) -> None:
    open_view(browser, server, "speech")
    choose(browser, "speech-model", "joe")
    by_id(browser, "speech-go").click()
    audio = by_id(browser, "speech-audio")
    wait_for(browser, lambda d: (audio.get_attribute("src") or "").startswith("blob:"))
    wait_for(browser, lambda d: d.execute_script("return arguments[0].readyState >= 1", audio))
    assert browser.execute_script("return arguments[0].duration", audio) > 0.5
    played = browser.execute_async_script(
        "const [audio, done] = arguments; audio.play().then(() => done('playing'), (e) => done(String(e)))", audio)
    assert played == "playing"
    download = by_id(browser, "speech-download")
    assert download.get_attribute("href").startswith("blob:") and download.get_attribute("download") == "speech.mp3"
    shot(browser, "speech")


def test_transcribing_an_uploaded_file_shows_the_words_with_timestamps(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    open_view(browser, server, "transcribe")
    choose(browser, "transcribe-model", "tiny.en")
    by_id(browser, "transcribe-file").send_keys(str(FOX))
    by_id(browser, "transcribe-go").click()
    wait_for(browser, lambda d: "fox" in by_id(d, "transcribe-text").text.lower())
    words = browser.find_elements(By.CSS_SELECTOR, "#transcribe-words-out li")
    assert len(words) >= 5 and all(word.text.endswith(" s") for word in words)
    assert any("fox" in word.text.lower() for word in words)
    shot(browser, "transcribe")
    choose(browser, "transcribe-format", "srt")
    by_id(browser, "transcribe-go").click()
    wait_for(browser, lambda d: "-->" in by_id(d, "transcribe-text").text)


def test_a_microphone_recording_is_transcribed(server: Server, browser: Any) -> None:
    open_view(browser, server, "transcribe")
    choose(browser, "transcribe-model", "tiny.en")
    choose(browser, "transcribe-format", "json")
    record = by_id(browser, "transcribe-record")
    record.click()
    wait_for(browser, lambda d: record.get_attribute("aria-pressed") == "true")
    browser.execute_script("return new Promise((done) => setTimeout(done, 1500))")  # a second and a half of tone
    record.click()
    wait_for(browser, lambda d: by_id(d, "transcribe-recorded").text.startswith("Recorded"))
    by_id(browser, "transcribe-go").click()
    wait_for(browser, lambda d: by_id(d, "transcribe-go").is_enabled())
    assert by_id(browser, "transcribe-status").text == ""  # the server decoded the browser's recording


def test_embeddings_show_a_similarity_matrix(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    open_view(browser, server, "embeddings")
    choose(browser, "embeddings-model", "minilm")
    by_id(browser, "embeddings-go").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#embeddings-matrix tbody tr")) == 3)
    cells = [[float(cell.text) for cell in row.find_elements(By.TAG_NAME, "td")]
             for row in browser.find_elements(By.CSS_SELECTOR, "#embeddings-matrix tbody tr")]
    assert [cells[i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    assert cells[0][1] > cells[0][2]  # the cat and the kitten are closer than the cat and the stock market
    shot(browser, "embeddings")


def test_images_stream_and_an_uploaded_image_is_edited_with_a_painted_mask(server: Server, browser: Any,
                                                                          tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    open_view(browser, server, "images")
    choose(browser, "images-model", "sketch")
    choose(browser, "images-size", "256x256")
    fill(browser, "images-seed", "7")
    by_id(browser, "images-go").click()
    caption = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#images-out figcaption"))
    wait_for(browser, lambda d: caption.text.startswith("256x256"))
    image = browser.find_element(By.CSS_SELECTOR, "#images-out img")
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 256

    source = tmp_path / "photo.png"
    Image.new("RGB", (192, 128), (40, 120, 200)).save(source)
    by_id(browser, "images-source").send_keys(str(source))
    mask = wait_for(browser, lambda d: by_id(d, "images-mask").is_displayed() and by_id(d, "images-mask"))
    wait_for(browser, lambda d: d.execute_script("return arguments[0].width", mask) == 192)
    ActionChains(browser).move_to_element(mask).click_and_hold().move_by_offset(20, 10).release().perform()
    alpha = "return arguments[0].getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data[3]"
    assert browser.execute_script(alpha, mask, 96, 64) > 0 and browser.execute_script(alpha, mask, 2, 2) == 0
    assert by_id(browser, "images-go").text == "Edit"
    by_id(browser, "images-go").click()  # the worker refuses a mask that is not a PNG with alpha of the image's size
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#images-out figure")) == 2)
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#images-out figcaption").text.startswith("256x256"))
    assert by_id(browser, "images-status").text == ""
    shot(browser, "images")


def test_a_phone_sized_screen_needs_no_sideways_scrolling(server: Server, browser: Any) -> None:
    browser.set_window_size(390, 844)
    try:
        for view in ("chat", "models", "transcribe"):
            open_view(browser, server, view)
            assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
            shot(browser, f"phone-{view}")
    finally:
        browser.set_window_size(1280, 860)
