"""Federation end to end: a front stacklet node routing to two real stacklet nodes (SmolLM2) and to a
fault-injecting upstream, on loopback. Failover happens only before the client's first byte; after it, a
failure ends the stream with an error event."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from faultserver import RETRY_AFTER_S
from nodes import admin, cli, fault_server, node, target_requests, wait_until
from serverproc import free_port, local_record

CHAT = "SmolLM2-135M-Instruct"
UPSTREAM_KEY = "sk-upstream-secret-for-the-fault-server"
HI = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, smollm_gguf: Path) -> Iterator[dict[str, Any]]:
    """The front node (no models of its own) with remotes node-a, node-b and one per fault mode."""
    temp = tmp_path_factory.mktemp
    record = local_record(CHAT, "llm", {"model": smollm_gguf})
    with node(temp("node-a"), [record]) as (a_root, a_key), node(temp("node-b"), [record]) as (b_root, b_key), \
            fault_server() as (fault_root, fault), node(front_home := temp("front")) as (root, key):
        api = admin(root, key)
        for name, url, upstream_key in (("node-a", a_root, a_key), ("node-b", b_root, b_key)):
            added = api.post("/v1/remotes", json={"name": name, "url": url + "/v1", "api_key": upstream_key})
            assert added.status_code == 200 and added.json()["models"] == [CHAT], added.text
        for mode in ("ok", "500", "drop", "slow", "429", "flap", "long"):
            result = cli(front_home, "remote", "add", f"f{mode}", f"{fault_root}/{mode}/v1", "--api-key-env",
                         "UPSTREAM_KEY", "--timeout", "2", env={"UPSTREAM_KEY": UPSTREAM_KEY})
            assert result.exit_code == 0, result.output
        assert cli(front_home, "remote", "add", "refused", f"http://127.0.0.1:{free_port()}/v1",
                   "--models", "echo").exit_code == 0
        yield {"root": root, "key": key, "home": front_home, "api": api, "fault_root": fault_root, "fault": fault}


def client(nodes: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=nodes["root"] + "/v1", api_key=nodes["key"], max_retries=0)


def route(nodes: dict[str, Any], name: str, targets: list[str], fallbacks: tuple[str, ...] = ()) -> None:
    made = nodes["api"].put(f"/v1/routes/{name}", json={"targets": targets, "fallbacks": list(fallbacks)})
    assert made.status_code == 200, made.text


def metrics(nodes: dict[str, Any]) -> str:
    return nodes["api"].get("/metrics").text


def test_a_route_spreads_over_two_real_nodes_and_speaks_every_api(nodes):
    route(nodes, "chat", ["node-a:" + CHAT, "node-b:" + CHAT])
    oai = client(nodes)
    answer = oai.chat.completions.create(model="chat", messages=HI, max_tokens=8, temperature=0)
    assert answer.model == "chat" and answer.choices[0].message.content
    chunks = list(oai.chat.completions.create(model="chat", messages=HI, max_tokens=4, stream=True))
    assert {c.model for c in chunks} == {"chat"} and any(c.choices and c.choices[0].delta.content for c in chunks)
    assert oai.responses.create(model="chat", input="Name a colour.", max_output_tokens=8).output_text
    assert oai.embeddings.create(model="chat", input="the sea").model == "chat"
    direct = oai.chat.completions.create(model=f"node-a:{CHAT}", messages=HI, max_tokens=2)
    assert direct.model == f"node-a:{CHAT}"


def test_the_same_prefix_sticks_to_one_node(nodes):
    route(nodes, "sticky", ["node-a:" + CHAT, "node-b:" + CHAT])
    before = metrics(nodes)
    system = {"role": "system", "content": "You are a terse assistant for the sticky routing test."}
    for turn in range(4):
        client(nodes).chat.completions.create(model="sticky", messages=[system, {"role": "user", "content": f"{turn}"}],
                                              max_tokens=1)
    after = metrics(nodes)
    moved = sorted(target_requests(after, t) - target_requests(before, t) for t in ("node-a:" + CHAT, "node-b:" + CHAT))
    assert moved == [0, 4]


def test_least_in_flight_takes_the_idle_node(nodes):
    route(nodes, "busy", ["node-a:" + CHAT, "node-b:" + CHAT])
    oai = client(nodes)
    stream = oai.chat.completions.create(model="busy", messages=HI, max_tokens=64, stream=True)
    first = next(iter(stream))  # in flight on one node now
    before = metrics(nodes)
    busy = next(t for t in ("node-a:" + CHAT, "node-b:" + CHAT)
                if f'stacklet_target_in_flight{{target="{t}"}} 1' in before.splitlines())
    oai.embeddings.create(model="busy", input="no prefix: least in flight decides")
    idle = "node-b:" + CHAT if busy.startswith("node-a") else "node-a:" + CHAT
    assert target_requests(metrics(nodes), idle) == target_requests(before, idle) + 1
    stream.close()
    assert first.model == "busy"


def test_refused_connection_and_500_fail_over_before_the_first_byte(nodes):
    route(nodes, "r-refused", ["refused:echo"], ("fok:echo",))
    answer = client(nodes).chat.completions.create(model="r-refused", messages=HI)
    assert answer.model == "r-refused" and answer.choices[0].message.content == "Hello there"
    route(nodes, "r-500", ["f500:echo"], ("node-a:" + CHAT,))
    stream = client(nodes).chat.completions.create(model="r-500", messages=HI, max_tokens=4, stream=True)
    assert {c.model for c in stream} == {"r-500"}
    remotes = {r["name"]: r for r in nodes["api"].get("/v1/remotes").json()["data"]}
    assert remotes["refused"]["healthy"] is False and remotes["refused"]["last_error"]


def test_a_drop_mid_stream_ends_with_an_error_event(nodes):
    route(nodes, "r-drop", ["fdrop:echo"], ("fok:echo",))
    received = []
    with pytest.raises(openai.APIError, match="mid-stream"):
        for chunk in client(nodes).chat.completions.create(model="r-drop", messages=HI, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["Hello", " there"]  # the fallback is not tried after the first byte


def test_a_slow_upstream_times_out_and_fails_over(nodes):
    route(nodes, "r-slow", ["fslow:echo"], ("fok:echo",))
    answer = client(nodes).chat.completions.create(model="r-slow", messages=HI)
    assert answer.choices[0].message.content == "Hello there"
    assert nodes["fault"].chats["slow"] >= 1


def test_429_retry_after_is_honoured(nodes):
    route(nodes, "r-429", ["f429:echo"])
    first = httpx.post(f"{nodes['root']}/v1/chat/completions", headers={"Authorization": f"Bearer {nodes['key']}"},
                       json={"model": "r-429", "messages": HI})
    assert first.status_code == 503 and 1 <= int(first.headers["retry-after"]) <= RETRY_AFTER_S
    asked = nodes["fault"].chats["429"]
    again = httpx.post(f"{nodes['root']}/v1/chat/completions", headers={"Authorization": f"Bearer {nodes['key']}"},
                       json={"model": "r-429", "messages": HI})
    assert again.status_code == 503 and int(again.headers["retry-after"]) >= 1
    assert nodes["fault"].chats["429"] == asked  # cooling down: not asked again


def test_flapping_upstream_leaves_and_rejoins(nodes):
    route(nodes, "r-flap", ["fflap:echo"], ("fok:echo",))
    fault, oai = nodes["fault"], client(nodes)
    httpx.post(f"{nodes['fault_root']}/flap/down")
    assert oai.chat.completions.create(model="r-flap", messages=HI).choices[0].message.content == "Hello there"
    served_by_ok = fault.chats["ok"]
    oai.chat.completions.create(model="r-flap", messages=HI)
    assert fault.chats["ok"] == served_by_ok + 1  # the flapping one is cooling down
    httpx.post(f"{nodes['fault_root']}/flap/up")
    wait_until(lambda: _remote(nodes, "fflap")["healthy"])
    flap_before = fault.chats["flap"]
    oai.chat.completions.create(model="r-flap", messages=HI)
    assert fault.chats["flap"] == flap_before + 1


def test_a_client_that_leaves_cancels_the_upstream_request(nodes):
    route(nodes, "r-long", ["flong:echo"])
    stream = client(nodes).chat.completions.create(model="r-long", messages=HI, stream=True)
    chunks = iter(stream)
    next(chunks), next(chunks)
    stream.close()
    wait_until(lambda: nodes["fault"].client_gone["long"] == 1)


def test_upstream_keys_go_upstream_and_nowhere_else(nodes):
    route(nodes, "r-key", ["fok:echo"])
    client(nodes).chat.completions.create(model="r-key", messages=HI)
    assert nodes["fault"].authorization["ok"] == f"Bearer {UPSTREAM_KEY}"  # not the client's key
    listed = json.loads(cli(nodes["home"], "remote", "list", "--json").stdout)
    assert UPSTREAM_KEY not in json.dumps(listed) and {r["name"]: r for r in listed}["fok"]["has_key"] is True
    key_file = nodes["home"] / "data" / "remote-keys" / "fok.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert UPSTREAM_KEY not in (nodes["home"] / "server.log").read_text()


def test_metrics_and_ps_show_targets(nodes):
    text = metrics(nodes)
    assert target_requests(text, "fok:echo") >= 1
    assert 'stacklet_remote_healthy{remote="node-a"} 1' in text
    assert "stacklet_target_duration_seconds_count" in text
    ps = cli(nodes["home"], "ps", "--json")
    remotes = [entry for entry in json.loads(ps.stdout) if entry.get("type") == "remote"]
    assert {"node-a", "node-b", "fok"} <= {r["name"] for r in remotes}
    table = cli(nodes["home"], "remote", "list").stdout
    assert "node-a" in table and "healthy" in table and CHAT in table


def test_routes_on_nodes_that_point_at_each_other_cannot_loop(nodes):
    route(nodes, "r-loop", ["fok:echo"])
    looped = httpx.post(f"{nodes['root']}/v1/chat/completions", json={"model": "r-loop", "messages": HI},
                        headers={"Authorization": f"Bearer {nodes['key']}", "x-stacklet-hops": "4"})
    assert looped.status_code == 400 and looped.json()["error"]["code"] == "route_loop"
    client(nodes).chat.completions.create(model="r-loop", messages=HI)
    assert nodes["fault"].hops["ok"] == "1"  # each router counts itself


def test_concurrent_streams_through_the_front_all_finish(nodes):
    route(nodes, "many", ["node-a:" + CHAT, "node-b:" + CHAT])
    results: list[str] = []

    def one(index: int) -> None:
        chunks = client(nodes).chat.completions.create(
            model="many", messages=[{"role": "user", "content": f"Count to {index}"}], max_tokens=8, stream=True)
        results.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 6 and all(results)


def _remote(nodes: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in nodes["api"].get("/v1/remotes").json()["data"] if r["name"] == name)
