"""Routes on one real server with SmolLM2 and MiniLM: clients that hard-code OpenAI's model names work once
a route names a local model, and the answer carries the name the client asked for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from nodes import admin, cli, node
from serverproc import local_record

from runtime.config import Settings
from runtime.errors import ConflictError, NotFoundError
from runtime.store.keys import KeyStore

CHAT, EMBED = "SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"
ALIASES = {"gpt-4o": CHAT, "gpt-4o-mini": CHAT, "text-embedding-3-small": EMBED, "text-embedding-ada-002": EMBED}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm_gguf: Path, minilm_gguf: Path
           ) -> Iterator[tuple[Path, str, str]]:
    """(home, root URL, admin key) of a server with both models and the OpenAI names routed to them."""
    home = tmp_path_factory.mktemp("routes")
    records = [local_record(CHAT, "llm", {"model": smollm_gguf}), local_record(EMBED, "embedding",
                                                                                 {"model": minilm_gguf})]
    with node(home, records) as (root, key):
        for alias, model in ALIASES.items():
            assert cli(home, "route", "set", alias, model).exit_code == 0
        yield home, root, key


def client(root: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=root + "/v1", api_key=key, max_retries=0)


def test_hard_coded_openai_names_reach_local_models(server):
    _, root, key = server
    oai = client(root, key)
    chat = oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Say hi"}],
                                       max_tokens=8, temperature=0)
    assert chat.model == "gpt-4o" and chat.choices[0].message.content
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=4, stream=True))
    assert {c.model for c in chunks} == {"gpt-4o-mini"}
    embedded = oai.embeddings.create(model="text-embedding-3-small", input=["a lighthouse", "the sea"])
    assert embedded.model == "text-embedding-3-small"
    assert len(embedded.data) == 2 and len(embedded.data[0].embedding) == 384
    answer = oai.responses.create(model="gpt-4o", input="Name a colour.", max_output_tokens=8)
    assert answer.model == "gpt-4o" and answer.output_text


def test_routes_are_listed_like_models(server):
    _, root, key = server
    oai = client(root, key)
    listed = {m.id: m for m in openai.OpenAI(base_url=root + "/v1-openai", api_key=key).models.list()}
    assert set(ALIASES) | {CHAT, EMBED} <= set(listed)
    assert listed["gpt-4o"].model_extra["meta"]["kind"] == "route"
    assert oai.models.retrieve("text-embedding-3-small").id == "text-embedding-3-small"
    managed = admin(root, key).get("/v1/models/gpt-4o").json()
    assert managed["kind"] == "route" and managed["meta"]["targets"] == [{"target": CHAT, "weight": 1}]


def test_a_route_to_a_model_of_another_kind_is_refused(server):
    _, root, key = server
    with pytest.raises(openai.BadRequestError) as refused:
        client(root, key).chat.completions.create(model="text-embedding-ada-002",
                                                  messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "model_not_supported"


def test_cli_route_list_and_rm(server):
    home, root, key = server
    assert cli(home, "route", "set", "scratch", CHAT, "--target", EMBED, "--weight", "3", "--weight", "1",
               "--fallback", CHAT).exit_code == 0
    routes = {r["name"]: r for r in json.loads(cli(home, "route", "list", "--json").stdout)}
    assert routes["scratch"]["targets"] == [{"target": CHAT, "weight": 3}, {"target": EMBED, "weight": 1}]
    assert routes["scratch"]["fallbacks"] == [CHAT]
    assert "scratch" in cli(home, "route", "list").stdout
    assert cli(home, "route", "rm", "scratch").exit_code == 0
    with pytest.raises(openai.NotFoundError) as gone:
        client(root, key).embeddings.create(model="scratch", input="x")
    assert gone.value.code == "model_not_found"


def test_cli_refuses_unknown_targets_and_model_names(server):
    home, _, _ = server
    unknown = cli(home, "route", "set", "nope", "no-such-model")
    assert isinstance(unknown.exception, NotFoundError) and "stacklet list" in str(unknown.exception)
    clash = cli(home, "route", "set", CHAT, EMBED)
    assert isinstance(clash.exception, ConflictError)


def test_management_api_sets_and_removes_routes_with_an_admin_key(server):
    home, root, key = server
    api = admin(root, key)
    made = api.put("/v1/routes/dall-e-3", json={"targets": [{"target": CHAT, "weight": 2}], "fallbacks": [EMBED]})
    assert made.status_code == 200, made.text
    assert made.json()["targets"][0]["weight"] == 2 and made.json()["fallbacks"][0]["target"] == EMBED
    assert any(r["id"] == "dall-e-3" for r in api.get("/v1/routes").json()["data"])
    inference, _ = KeyStore(Settings.load(environ={"STACKLET_HOME": str(home)}).paths).create("inference-only")
    denied = httpx.put(f"{root}/v1/routes/x", headers={"Authorization": f"Bearer {inference}"},
                       json={"targets": [CHAT]})
    assert denied.status_code == 403
    assert api.put("/v1/routes/bad", json={"targets": []}).status_code == 400
    assert api.put("/v1/routes/bad", json={"targets": [{"target": CHAT, "weight": 0}]}).status_code == 400
    assert api.delete("/v1/routes/dall-e-3").status_code == 200
    assert api.delete("/v1/routes/dall-e-3").status_code == 404
