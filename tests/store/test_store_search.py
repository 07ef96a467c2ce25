"""`stacklet search` against the local hub's model search: repos, their quants and sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import FakeHub, tiny_gguf

from runtime.errors import HubResponseError, InvalidRequestError
from runtime.store.search import search


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        for repo, downloads in (("org/Smol-GGUF", 10), ("bartowski/Smol-Big-GGUF", 500)):
            files = {f"smol-{q}.gguf": tiny_gguf(extra=b"\0" * size) for q, size in (("Q8_0", 3000), ("Q2_K", 1000))}
            server.add_repo(repo, {**files, "mmproj-smol-f16.gguf": tiny_gguf("clip", template=None)})
            server.state.repos[repo].tags, server.state.repos[repo].downloads = ("gguf",), downloads
        shards = {f"smol-Q4_K_M-0000{i}-of-00002.gguf": tiny_gguf(extra=bytes([i])) for i in (1, 2)}
        server.add_repo("org/Smol-Sharded-GGUF", shards).tags = ("gguf",)
        server.add_repo("org/Smol-transformers", {"model.safetensors": b"\0" * 100}).tags = ("safetensors",)
        server.add_repo("org/Smol-whisper", {"model.bin": b"\0" * 700, "config.json": b"{}"}).tags = ("ctranslate2",)
        server.add_repo("org/Smol-gguf-tag-but-no-files", {"README.md": b"#"}).tags = ("gguf",)
        yield server


def test_gguf_repos_with_their_quants_most_downloaded_first(hub: FakeHub, stacklet_home: Path) -> None:
    found = search(stacklet_home, "smol")
    assert [f["repo"] for f in found] == ["bartowski/Smol-Big-GGUF", "org/Smol-GGUF", "org/Smol-Sharded-GGUF"]
    big = found[0]
    assert big["format"] == "gguf" and big["downloads"] == 500 and big["pull"] == "hf.co/bartowski/Smol-Big-GGUF"
    files = hub.state.repos["bartowski/Smol-Big-GGUF"].files
    assert big["quants"] == [{"quant": "Q2_K", "size": len(files["smol-Q2_K.gguf"])},
                             {"quant": "Q8_0", "size": len(files["smol-Q8_0.gguf"])}]  # mmproj is no quant
    shards = hub.state.repos["org/Smol-Sharded-GGUF"].files.values()
    assert found[2]["quants"] == [{"quant": "Q4_K_M", "size": sum(map(len, shards))}]  # every shard counted


def test_other_kinds_and_limits(hub: FakeHub, stacklet_home: Path) -> None:
    whisper = search(stacklet_home, "smol", kind="transcription")
    assert [(f["repo"], f["format"], f["size"]) for f in whisper] == [("org/Smol-whisper", "whisper", 702)]
    assert len(search(stacklet_home, "smol", limit=1)) == 1
    assert search(stacklet_home, "nothing-like-it") == []
    for bad in ({"query": " "}, {"query": "x", "kind": "video"}, {"query": "x", "limit": 0}):
        with pytest.raises(InvalidRequestError):
            search(stacklet_home, **{"kind": "llm", **bad})


def test_the_cli_prints_whole_names_and_json(hub: FakeHub, stacklet_home: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "STACKLET_HOME": str(stacklet_home), "COLUMNS": "40"}
    listed = subprocess.run([sys.executable, "-m", "cli", "search", "smol"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["REPO", "FORMAT", "QUANTS", "/", "SIZE", "DOWNLOADS"]
    assert lines[1].startswith("bartowski/Smol-Big-GGUF   gguf     Q2_K ")
    assert "stacklet pull" in lines[-1]
    as_json = subprocess.run([sys.executable, "-m", "cli", "search", "smol", "--json", "--limit", "2"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert [f["repo"] for f in json.loads(as_json.stdout)] == ["bartowski/Smol-Big-GGUF", "org/Smol-GGUF"]
    refused = subprocess.run([sys.executable, "-m", "cli", "search", "smol", "--limit", "99"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip() == "error: --limit takes 1 to 50."


def test_modelscope_search_by_name_most_downloaded_first(hub: FakeHub, stacklet_home: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
    found = search(stacklet_home, "smol", hub="modelscope", limit=10)
    assert [f["repo"] for f in found] == ["bartowski/Smol-Big-GGUF", "org/Smol-GGUF", "org/Smol-Sharded-GGUF"]
    assert found[0]["pull"] == "modelscope.cn/bartowski/Smol-Big-GGUF" and found[0]["downloads"] == 500
    assert [q["quant"] for q in found[0]["quants"]] == ["Q2_K", "Q8_0"]
    request = hub.state.bodies[-1]
    assert (request["Name"], request["SortBy"], request["PageSize"]) == ("smol", "DownloadsCount", 10)
    # By name only: the file lists decide the kind, so tags a ModelScope repo may lack never hide it.
    whisper = search(stacklet_home, "smol", kind="transcription", hub="modelscope")
    assert [(f["repo"], f["pull"]) for f in whisper] == [("org/Smol-whisper", "modelscope.cn/org/Smol-whisper")]
    with pytest.raises(InvalidRequestError):
        search(stacklet_home, "smol", hub="github")


@pytest.mark.parametrize("answer", [
    [], {"Code": 200, "Data": None}, {"Code": 200, "Data": {"Model": {"Models": "many"}}},
    {"Code": 10010205001, "Data": {"Model": {"Models": []}}, "Message": "error"},
])
def test_a_modelscope_search_answer_of_the_wrong_shape_is_refused(hub: FakeHub, stacklet_home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, answer) -> None:
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
    hub.state.rewrite_search = lambda _: answer
    with pytest.raises(HubResponseError, match="invalid search result"):
        search(stacklet_home, "smol", hub="modelscope")


def test_hostile_modelscope_rows_are_left_out_and_bounded(hub: FakeHub, stacklet_home: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
    rows = [{"Path": "..", "Name": "etc"}, {"Path": "org/x", "Name": "y"}, "not a row", {"Path": "org"},
            {"Path": "org", "Name": "Smol-GGUF", "Downloads": "lots"}, {"Path": "org", "Name": "Smol-GGUF"}]
    hub.state.rewrite_search = lambda answer: {**answer, "Data": {"Model": {"Models": rows * 100}}}
    found = search(stacklet_home, "smol", hub="modelscope", limit=6)
    assert [(f["repo"], f["downloads"]) for f in found] == [("org/Smol-GGUF", 0), ("org/Smol-GGUF", 0)]
    assert not any(".." in path for _, path, _ in hub.state.log)
    assert len([1 for method, path, _ in hub.state.log if method == "GET" and path.endswith("/repo/files")]) == 2


def test_the_cli_searches_the_configured_hub(hub: FakeHub, stacklet_home: Path) -> None:
    env = {**os.environ, "MODELSCOPE_ENDPOINT": hub.url, "STACKLET_HOME": str(stacklet_home),
           "STACKLET_HUB": "modelscope", "HF_ENDPOINT": "http://127.0.0.1:9"}  # Hugging Face is out of reach
    listed = subprocess.run([sys.executable, "-m", "cli", "search", "smol", "--limit", "2"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].startswith("bartowski/Smol-Big-GGUF")
    assert "stacklet pull modelscope.cn/OWNER/REPO" in listed.stdout.replace("\n", " ")
    on_hf = subprocess.run([sys.executable, "-m", "cli", "search", "smol", "--hub", "huggingface"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert on_hf.returncode != 0 and "Cannot reach http://127.0.0.1:9" in on_hf.stderr
