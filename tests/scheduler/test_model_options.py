"""Options stored with a model (`stacklet set`, PATCH /v1/models/{id}), their layering in the scheduler,
GQA-aware KV-cache estimates from GGUF headers, and `python -m runtime` publishing its state record."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from serverproc import free_port

from runtime.config import Settings
from runtime.engines.llama.defaults import kv_cache_bytes
from runtime.errors import InvalidRequestError
from runtime.options import EngineOptions, parse_keep_alive
from runtime.scheduler.scheduler import Scheduler
from runtime.server import state
from runtime.spec import WorkerLimits
from runtime.store.keys import KeyStore
from runtime.store.registry import ModelRecord, Registry
from runtime.store.store import Store

WAIT_S = 60  # generous upper bound for "eventually", never a timing assertion


def stacklet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=WAIT_S * 2,
                          env=os.environ.copy())




def register_fake(name: str) -> Registry:
    registry = Registry(Settings.load().paths.ensure())
    registry.add(ModelRecord(name, "llm", {"type": "fake"}, [], {}, engine="fake"))
    return registry


# The registry


def test_configure_is_a_merge_patch_that_persists() -> None:
    registry = register_fake("m")
    registry.configure("m", {"ctx-size": "2048", "n_gpu_layers": "all", "keep_alive": "10m"})
    registry.configure("m", {"n_gpu_layers": None, "threads": 2})
    stored = Registry(Settings.load().paths).get("m")  # a fresh connection reads what was committed
    assert stored.options == EngineOptions(ctx_size=2048, threads=2)
    assert stored.keep_alive == 600.0
    assert stored.to_dict()["keep_alive"] == 600.0
    registry.configure("m", {"keep_alive": None})
    assert registry.get("m").keep_alive is None
    registry.configure("m", {"keep_alive": -5})
    assert registry.get("m").keep_alive == -1.0  # forever


@pytest.mark.parametrize("patch, param", [({"flash_attn": "sometimes"}, "flash_attn"), ({"warp": 9}, "warp"),
                                          ({"warp": None}, "warp"), ({"ctx_size": 1, "keep_alive": "soon"},
                                                                     "keep_alive")])
def test_an_invalid_patch_changes_nothing(patch: dict[str, Any], param: str) -> None:
    registry = register_fake("m")
    registry.configure("m", {"ctx_size": 512, "keep_alive": 30})
    with pytest.raises(InvalidRequestError) as caught:
        registry.configure("m", patch)
    assert caught.value.param == param
    stored = registry.get("m")
    assert (stored.options, stored.keep_alive) == (EngineOptions(ctx_size=512), 30.0)


def test_engine_options_layer_serve_model_load_and_limits_come_from_the_settings() -> None:
    settings = replace(Settings.load(), engine=EngineOptions(ctx_size=1024, threads=1, flash_attn="on"),
                       max_body_bytes=1234)
    record = ModelRecord("m", "llm", {"type": "fake"}, options=EngineOptions(ctx_size=2048, threads=2), engine="fake")
    spec = Scheduler(settings, Registry(settings.paths.ensure())).spec_for(record, EngineOptions(threads=4))
    assert spec.options == EngineOptions(ctx_size=2048, threads=4, flash_attn="on")
    assert spec.limits == WorkerLimits(1234, settings.paths.images, settings.image_url_ttl)


# Ranges: what llama.cpp or ctypes would wrap, assert or crash on is refused wherever options come from

BAD_OPTIONS = [
    ({"ctx_size": 1}, "at least 256"), ({"ctx_size": 255}, "at least 256"), ({"ctx_size": 1.5}, "whole number"),
    ({"ctx_size": True}, "not true or false"), ({"ctx_size": math.inf}, "whole number"),
    ({"ctx_size": math.nan}, "whole number"), ({"ctx_size": 4294967808}, "training context"),
    ({"ctx_size": "1e9"}, "whole number"), ({"ctx_size": [4096]}, "whole number"),
    ({"threads": 100000}, "per CPU"), ({"threads": 2**32 + 1}, "per CPU"), ({"threads": 0}, "per CPU"),
    ({"threads": False}, "not true or false"), ({"n_gpu_layers": 1e20}, "layer count"),
    ({"n_gpu_layers": 10**20}, "layer count"), ({"n_gpu_layers": "100000000000000000000"}, "layer count"),
    ({"n_gpu_layers": -1}, "layer count"), ({"n_gpu_layers": True}, "layer count"),
    ({"main_gpu": 2**32}, "0 to 15"), ({"main_gpu": -1}, "0 to 15"), ({"parallel": 0}, "1 to 256"),
    ({"parallel": 100000}, "1 to 256"), ({"tensor_split": [math.nan, 1]}, "non-negative"),
    ({"tensor_split": [-1, 1]}, "non-negative"), ({"tensor_split": [1] * 17}, "at most 16"),
    ({"tensor_split": [10**400]}, "tensor_split"),
]


@pytest.mark.parametrize("values, message", BAD_OPTIONS, ids=[repr(v)[:40] for v, _ in BAD_OPTIONS])
def test_engine_options_refuse_values_out_of_range(values: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        EngineOptions.from_dict(values)
    assert caught.value.param == next(iter(values)) and message in caught.value.message


def test_engine_options_take_whole_numbers_in_any_form_and_threads_up_to_twice_the_cpus() -> None:
    options = EngineOptions.from_dict({"ctx_size": 2048.0, "parallel": "8", "n_gpu_layers": 999,
                                       "threads": 2 * (os.cpu_count() or 1), "tensor_split": "1,0.5"})
    assert options == EngineOptions(ctx_size=2048, parallel=8, n_gpu_layers="999", threads=2 * (os.cpu_count() or 1),
                                    tensor_split=(1.0, 0.5))


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**400, "9" * 400 + "h"],
                         ids=["inf", "-inf", "nan", "10**400", "400-digit-hours"])
def test_keep_alive_refuses_what_is_not_a_finite_duration(value: Any) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_keep_alive(value)
    assert caught.value.param == "keep_alive"


def test_settings_refuse_bad_engine_options_from_the_environment_and_the_config_file() -> None:
    with pytest.raises(InvalidRequestError, match="'threads'"):
        Settings.load(environ={**os.environ, "STACKLET_THREADS": "100000"})
    config = Settings.load().paths.ensure().config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[engine]\nctx_size = 4294967808\n")
    with pytest.raises(InvalidRequestError, match="'ctx_size'"):
        Settings.load()


@pytest.mark.parametrize("args", [["--threads", "100000"], ["--ctx-size", "1"], ["--n-gpu-layers", "1e20"]])
def test_serve_refuses_bad_engine_flags_in_one_line(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "runtime", "--port", str(free_port()), *args], capture_output=True,
                            text=True, timeout=WAIT_S)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Invalid value" in result.stderr and "Traceback" not in result.stderr


def test_a_patch_over_the_models_training_context_is_refused_and_stores_nothing() -> None:
    registry = Registry(Settings.load().paths.ensure())
    registry.add(ModelRecord("m", "llm", {"type": "fake"}, [], {"context_length": 8192}, engine="fake"))
    registry.configure("m", {"ctx_size": 8192})
    with pytest.raises(InvalidRequestError, match="trained with a context of 8192 tokens; use at most 8192") as caught:
        registry.configure("m", {"ctx_size": 8193})
    assert caught.value.param == "ctx_size"
    assert registry.get("m").options == EngineOptions(ctx_size=8192)


def test_a_stored_option_this_version_refuses_is_left_out_and_can_be_unset() -> None:
    registry = register_fake("m")
    with registry._conn:  # as an older version stored it, before options were checked
        registry._conn.execute("""UPDATE models SET options = '{"ctx_size": 1, "threads": 1}' WHERE name = 'm'""")
    assert registry.get("m").options == EngineOptions(threads=1)
    assert [r.name for r in registry.list()] == ["m"]
    assert registry.configure("m", {"ctx_size": None}).options == EngineOptions(threads=1)


# GGUF metadata and the KV-cache estimate


def test_gguf_metadata_has_attention_heads_and_the_estimate_uses_them(smollm_gguf: Path) -> None:
    store = Store(Settings.load().paths.ensure())
    meta = store.pull(str(smollm_gguf), name="smol").metadata
    assert (meta["head_count"], meta["head_count_kv"], meta["key_length"], meta["value_length"]) == (9, 3, 64, 64)
    options = EngineOptions(ctx_size=1000)
    f16 = 2
    assert kv_cache_bytes(meta, options) == 30 * 1000 * 3 * (64 * f16 + 64 * f16)
    without_gqa = {**meta, "head_count_kv": None}
    assert kv_cache_bytes(without_gqa, options) == 3 * kv_cache_bytes(meta, options)


def test_a_refreshing_pull_keeps_what_is_stored_with_the_model(minilm_gguf: Path) -> None:
    store = Store(Settings.load().paths.ensure())
    store.pull(str(minilm_gguf), name="minilm")
    store.registry.configure("minilm", {"threads": 2, "keep_alive": "1h"})
    refreshed = store.pull(str(minilm_gguf), name="minilm")
    assert (refreshed.options, refreshed.keep_alive) == (EngineOptions(threads=2), 3600.0)
    assert store.get("minilm").keep_alive == 3600.0


# `stacklet set` and `stacklet show`


def test_stacklet_set_stores_shows_and_unsets() -> None:
    register_fake("m").close()
    result = stacklet("set", "m", "--ctx-size", "2048", "--n-gpu-layers", "0", "--main-gpu", "0", "--no-mmap",
                      "--kv-slots", "--keep-alive", "10m", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["options"] == {"ctx_size": 2048, "n_gpu_layers": "0", "main_gpu": 0, "no_mmap": True,
                                 "kv_slots": True}
    assert record["keep_alive"] == 600.0
    result = stacklet("set", "m", "--unset", "no-mmap", "--unset", "kv-slots", "--unset", "keep_alive",
                      "--threads", "3")
    assert result.returncode == 0, result.stderr
    assert "until it reloads" in result.stdout
    shown = json.loads(stacklet("show", "m", "--json").stdout)
    assert shown["options"] == {"ctx_size": 2048, "n_gpu_layers": "0", "main_gpu": 0, "threads": 3}
    assert shown["keep_alive"] is None
    assert "ctx_size=2048" in stacklet("show", "m").stdout


@pytest.mark.parametrize("args, message, code", [
    (["m", "--flash-attn", "maybe"], "flash_attn", 2),
    (["m", "--keep-alive", "soon"], "keep_alive", 2),
    (["m", "--unset", "warp"], "warp", 2),
    (["m", "--ctx-size", "5", "--unset", "ctx_size"], "contradicts", 2),
    (["nope", "--ctx-size", "5"], "nope", 4),
])
def test_stacklet_set_rejects_bad_input(args: list[str], message: str, code: int) -> None:
    register_fake("m").close()
    result = stacklet("set", *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert json.loads(stacklet("show", "m", "--json").stdout)["options"] == {}


# The server: `python -m runtime` as a real process, the real scheduler and fake-engine workers


class Server:
    def __init__(self, process: subprocess.Popen[bytes], root: str, key: str) -> None:
        self.process, self.root = process, root
        self.http = httpx.Client(base_url=root, headers={"Authorization": f"Bearer {key}"}, timeout=WAIT_S)
        self.openai = openai.OpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0, timeout=WAIT_S)

    def chat(self, **extra: Any) -> None:
        self.openai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=1,
                                            extra_body=extra or None)

    def patch(self, body: Any) -> httpx.Response:
        return self.http.patch("/v1/models/m", json=body)

    def worker(self) -> dict[str, Any]:
        return self.http.get("/v1/models/m").json()["worker"]


def start_server(*flags: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = Settings.load().paths.ensure().logs / "direct.log"
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "runtime", "--port", str(port), *flags],
                                   stdout=out, stderr=subprocess.STDOUT)
    return process, port


def wait_healthy(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        assert process.poll() is None, "the server exited during start-up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server never answered /health"
        time.sleep(0.1)


@pytest.fixture
def server() -> Iterator[Server]:
    register_fake("m").close()
    key, _ = KeyStore(Settings.load().paths).create("test", scope="admin")
    process, port = start_server("--keep-alive", "300", "--threads", "2", "--ctx-size", "512")
    try:
        wait_healthy(process, port)
        yield Server(process, f"http://127.0.0.1:{port}", key)
    finally:
        process.terminate()
        process.wait(timeout=WAIT_S)


def keep_alive_of(worker: dict[str, Any]) -> float | None:
    """The keep_alive the last request set: the scheduler computes expires_at = last_used + keep_alive."""
    return None if worker["expires_at"] is None else round(worker["expires_at"] - worker["last_used"])


def test_patch_stores_options_and_the_scheduler_layers_them(server: Server) -> None:
    patched = server.patch({"ctx_size": 1024, "keep_alive": -1})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["id"], patched.json()["options"], patched.json()["keep_alive"]) == ("m", {"ctx_size": 1024},
                                                                                               -1.0)
    server.chat()
    worker = server.worker()
    assert worker["options"] == {"ctx_size": 1024, "threads": 2}  # serve < model
    assert keep_alive_of(worker) is None  # the model's "forever" over serve's 300 s

    server.patch({"ctx_size": 2048, "keep_alive": "1h"})
    server.chat()
    worker = server.worker()
    assert worker["options"]["ctx_size"] == 1024  # a loaded model keeps its options until it reloads
    assert keep_alive_of(worker) == 3600  # a new keep_alive counts from the next request
    server.chat(keep_alive="10m")
    assert keep_alive_of(server.worker()) == 600  # request > model

    loaded = server.http.post("/v1/models/m/load", json={"ctx_size": 4096})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["worker"]["options"] == {"ctx_size": 4096, "threads": 2}  # model < load
    assert keep_alive_of(loaded.json()["worker"]) == 3600
    server.http.post("/v1/models/m/unload")
    server.chat()
    assert server.worker()["options"] == {"ctx_size": 2048, "threads": 2}  # the stored options, after a reload

    cleared = server.patch({"ctx_size": None, "keep_alive": None}).json()
    assert (cleared["options"], cleared["keep_alive"]) == ({}, None)
    server.chat()
    assert keep_alive_of(server.worker()) == 300  # back to serve's

    ps = stacklet("ps", "--json")
    assert ps.returncode == 0, ps.stderr
    assert [(w["model"], w["options"]) for w in json.loads(ps.stdout)] == [("m", {"ctx_size": 2048, "threads": 2})]


def test_patch_errors(server: Server) -> None:
    server.patch({"ctx_size": 512})
    for body, param in (({"flash_attn": "sometimes"}, "flash_attn"), ({"warp_speed": 9}, "warp_speed"),
                        ({"keep_alive": "soon"}, "keep_alive")):
        response = server.patch(body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert response.json()["error"]["param"] == param
    malformed = server.http.patch("/v1/models/m", content=b"{oops", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert server.patch([1]).status_code == 400
    missing = server.http.patch("/v1/models/nope", json={"ctx_size": 1})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert server.http.get("/v1/models/m").json()["options"] == {"ctx_size": 512}


def test_load_and_patch_refuse_out_of_range_options_and_change_nothing(server: Server) -> None:
    server.patch({"ctx_size": 1024})
    server.chat()
    before = server.worker()
    bodies = [{"ctx_size": 1}, {"ctx_size": 1.5}, {"ctx_size": True}, {"ctx_size": 4294967808},
              {"threads": 100000}, {"threads": 2**32 + 1}, {"n_gpu_layers": 1e20}, {"parallel": 100000}]
    for body in bodies:
        for response in (server.patch(body), server.http.post("/v1/models/m/load", json=body)):
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"]["param"] == next(iter(body))
    for raw in (b'{"ctx_size": Infinity}', b'{"ctx_size": NaN}', b'{"keep_alive": -Infinity}'):
        for method, path in (("PATCH", "/v1/models/m"), ("POST", "/v1/models/m/load")):
            response = server.http.request(method, path, content=raw, headers={"content-type": "application/json"})
            assert response.status_code == 400, (raw, response.text)
    after = server.worker()
    assert (after["pid"], after["options"]) == (before["pid"], before["options"])
    assert server.http.get("/v1/models/m").json()["options"] == {"ctx_size": 1024}
    server.chat()


# State record: a server started directly is visible to the CLI


def test_python_m_runtime_publishes_its_state_for_status_and_stop() -> None:
    process, port = start_server("--no-auth")
    try:
        wait_healthy(process, port)
        status = stacklet("status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert (report["running"], report["pid"], report["healthy"]) == (True, process.pid, True)
        assert report["url"] == f"http://127.0.0.1:{port}"

        second, second_port = start_server("--no-auth")
        assert second.wait(timeout=WAIT_S) != 0  # refuses rather than hide the first from `stacklet stop`
        assert state.read(Settings.load().paths).pid == process.pid

        stopped = stacklet("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"pid {process.pid}" in stopped.stdout
        assert process.wait(timeout=WAIT_S) == 128 + signal.SIGTERM  # a graceful exit on SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
    assert state.read(Settings.load().paths) is None
    assert stacklet("status").returncode == 7


def test_the_server_removes_its_own_state_record_when_terminated() -> None:
    process, port = start_server("--no-auth")
    try:
        wait_healthy(process, port)
        assert state.read(Settings.load().paths).pid == process.pid
        process.terminate()
        assert process.wait(timeout=WAIT_S) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
    assert state.read(Settings.load().paths) is None
