"""End to end through the real background server: `stacklet pull` the real small models, `serve -d`,
then `stacklet chat`, `stacklet test ...` and the openai client, then `stacklet stop`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from greedy import chat_scored, first_near_tie, greedy_prefix, text_of

CHAT, EMBED = "SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"


def stacklet(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, smollm_gguf: Path, minilm_gguf: Path) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("text-e2e")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "STACKLET_HOME": str(home), "STACKLET_PORT": str(port)}
    for path in (smollm_gguf, minilm_gguf):
        assert stacklet(env, "pull", str(path)).returncode == 0
    started = stacklet(env, "serve", "-d", "--port", str(port))
    assert started.returncode == 0, started.stderr
    try:
        yield env
    finally:
        stacklet(env, "stop")


def test_chat_one_shot_and_from_stdin(env: dict[str, str]) -> None:
    import openai

    from runtime.config import Settings
    from runtime.store.keys import admin_key

    first = stacklet(env, "chat", CHAT, "What is 2+2?", "--temperature", "0", "--max-tokens", "8")
    again = stacklet(env, "chat", CHAT, "--temperature", "0", "--max-tokens", "8", stdin="What is 2+2?")
    assert first.returncode == 0 and first.stdout.strip()
    # Three greedy runs of one request, the later ones on a warm cache. The CLI shows no logprobs: a scored
    # run through the server says where greedy runs may part (greedy.py); up to there they are the same.
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{env['STACKLET_PORT']}/v1", max_retries=0,
                           api_key=admin_key(Settings.load(environ=env).paths))
    scored = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "What is 2+2?"}],
                                            temperature=0, max_tokens=8, logprobs=True, top_logprobs=2).choices[0]
    reference = chat_scored(scored.logprobs)
    assert text_of(reference) == scored.message.content
    assert first.stdout.startswith(greedy_prefix(reference)) and again.stdout.startswith(greedy_prefix(reference))
    if first_near_tie(reference) == len(reference) and scored.finish_reason == "length":  # nowhere to part
        assert first.stdout == again.stdout == scored.message.content + "\n"
    missing = stacklet(env, "chat", "no-such-model", "hi")
    assert missing.returncode != 0 and "does not exist" in missing.stderr


def test_smoke_tests_through_the_server(env: dict[str, str]) -> None:
    for command, model in (("chat", CHAT), ("completions", CHAT), ("embeddings", EMBED)):
        result = stacklet(env, "test", command, model, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["ok"]


def test_ps_and_metrics_show_the_batch_engine(env: dict[str, str]) -> None:
    import httpx

    from runtime.config import Settings
    from runtime.store.keys import admin_key

    assert stacklet(env, "chat", CHAT, "Hi", "--max-tokens", "4").returncode == 0
    workers = {w["model"]: w for w in json.loads(stacklet(env, "ps", "--json").stdout)}
    engine = workers[CHAT]["engine"]
    assert engine["kv_cells_total"] == 8192 and "active_sequences" in engine  # as of the last status poll
    assert "% of 8192" in stacklet({**env, "COLUMNS": "200"}, "ps").stdout
    paths = Settings.load(environ=env).paths
    metrics = httpx.get(f"http://127.0.0.1:{env['STACKLET_PORT']}/metrics",
                        headers={"Authorization": f"Bearer {admin_key(paths)}"}).text
    assert f'stacklet_kv_cells_total{{model="{CHAT}"}} 8192' in metrics
    assert f'stacklet_active_sequences{{model="{CHAT}"}}' in metrics
    assert f'stacklet_cached_prefixes{{model="{CHAT}"}}' in metrics
