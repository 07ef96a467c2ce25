"""Hostile input to the management API, against a real `python -m runtime` with a real small model.

Each case is one request as an attacker would send it (raw paths, raw bodies, odd keys) with the status
it must get and, for errors, the OpenAI envelope. After every case the server still answers /health,
the model still generates on the same worker process, the model list is unchanged and nothing reached
the model store. Covered here: key scopes, local imports over the API (reading the server's disk, symlink
and traversal escapes from the operator's import_dirs, the server's working directory), model names, and
traversal in management URLs.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from serverproc import local_record, server_process

from runtime.config import Settings
from runtime.store.keys import KeyStore

MODEL = "smol"
LEAKS = ("root:", "shadow", "passwd:", "HF_TOKEN", "hostname", "bin", "lib")  # what /etc, /usr or /proc would show
ALLOWED = "{allowed}"  # replaced by the operator's import directory
SSE_ERROR = 200  # a pull that starts streaming and ends with an error event


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: Any = None  # a dict/list is sent as JSON, bytes as they are, None as no body
    key: str = "admin"  # "admin", "inference", "none", or the raw Authorization header value
    status: int | tuple[int, ...] = 400
    code: str | None = None  # the envelope's code, when the case pins one down
    param: str | None = None
    absent: tuple[str, ...] = ()  # must not appear anywhere in the answer
    query: dict[str, str] = field(default_factory=dict)


def pull(source: Any, **fields: Any) -> dict[str, Any]:
    return {"source": source, **fields}


def refused(case_id: str, source: Any, **fields: Any) -> Case:
    return Case(case_id, "POST", "/v1/models", pull(source, **fields), status=403, code="local_import_not_allowed",
                param="source", absent=LEAKS)


def unreadable(case_id: str, source: Any) -> Case:
    """A source no file system takes (NUL, lone surrogates, huge): refused as text (400) or as a path (403)."""
    return Case(case_id, "POST", "/v1/models", pull(source), status=(400, 403), param="source", absent=LEAKS)


def bad_name(case_id: str, name: Any) -> Case:
    return Case(case_id, "POST", "/v1/models", pull("org/repo", name=name), status=400, param="name")


def not_found(case_id: str, method: str, path: str, body: Any = None) -> Case:
    return Case(case_id, method, path, body, status=404, code="model_not_found")


# A hub-shaped source never reads the server's disk; whether the pull is refused up front (400) or ends with
# an error event (the hub is offline here) is the pull's own business, but nothing local leaks either way.
HUB_SHAPED = (SSE_ERROR, 400, 503)

CASES = [
    # Key scopes: an inference key serves the OpenAI routes and reads the list; it changes nothing.
    Case("inference-pull", "POST", "/v1/models", pull("/etc"), key="inference", status=403, code="insufficient_scope"),
    Case("inference-delete", "DELETE", f"/v1/models/{MODEL}", key="inference", status=403, code="insufficient_scope"),
    Case("inference-load", "POST", f"/v1/models/{MODEL}/load", {"ctx_size": 1}, key="inference", status=403,
         code="insufficient_scope"),
    Case("inference-unload", "POST", f"/v1/models/{MODEL}/unload", key="inference", status=403,
         code="insufficient_scope"),
    Case("inference-patch", "PATCH", f"/v1/models/{MODEL}", {"ctx_size": 1}, key="inference", status=403,
         code="insufficient_scope"),
    Case("inference-lists", "GET", "/v1/models", key="inference", status=200),
    Case("inference-gets", "GET", f"/v1/models/{MODEL}", key="inference", status=200),
    # Keys that are not keys.
    Case("no-key-delete", "DELETE", f"/v1/models/{MODEL}", key="none", status=401),
    Case("wrong-key-delete", "DELETE", f"/v1/models/{MODEL}", key="Bearer sk-stacklet-wrongwrongwrong", status=401,
         code="invalid_api_key"),
    Case("prefix-only-key", "DELETE", f"/v1/models/{MODEL}", key="Bearer sk-stacklet-", status=401,
         code="invalid_api_key"),
    Case("basic-auth", "DELETE", f"/v1/models/{MODEL}", key="Basic YWRtaW46YWRtaW4=", status=401),
    Case("key-in-query", "DELETE", f"/v1/models/{MODEL}", key="none", status=401,
         query={"api_key": "sk-stacklet-in-the-query"}),
    Case("huge-key", "DELETE", f"/v1/models/{MODEL}", key="Bearer " + "k" * 8000, status=401,
         code="invalid_api_key"),
    # Local imports over the API: only inside import_dirs, resolved, with nothing said about the disk.
    refused("etc", "/etc"),
    refused("etc-shadow", "/etc/shadow"),
    refused("etc-passwd", "/etc/passwd"),
    refused("relative-etc", "../../etc"),
    refused("deep-relative", "../../../../../../../../etc/passwd"),
    refused("usr", "/usr"),
    refused("proc-environ", "/proc/self/environ"),
    refused("proc-cwd", "/proc/self/cwd"),
    refused("dev-zero", "/dev/zero"),
    refused("dev-stdin", "/dev/stdin"),
    refused("home-ssh", "~/.ssh/id_rsa"),
    refused("tilde-user", "~root/.bashrc"),
    refused("dot-relative", "./model.gguf"),
    refused("bare-file", "model.gguf"),
    refused("windows-drive", "C:\\Windows\\System32\\config\\SAM"),
    refused("windows-forward", "c:/windows/win.ini"),
    refused("unc-share", "\\\\server\\share\\m.gguf"),
    refused("allowed-dotdot", f"{ALLOWED}/../../../etc/passwd"),
    refused("allowed-link-dir", f"{ALLOWED}/etc"),
    refused("allowed-link-dir-file", f"{ALLOWED}/etc/passwd"),
    refused("allowed-link-file", f"{ALLOWED}/passwd.gguf"),
    refused("allowed-dir-with-link-out", f"{ALLOWED}/sub"),
    refused("allowed-symlink-loop", f"{ALLOWED}/loop"),
    refused("allowed-companion-out", f"{ALLOWED}/voice.onnx"),
    refused("import-with-files", "/etc", files=["*"]),
    unreadable("allowed-nul", f"{ALLOWED}/x\x00.gguf"),
    unreadable("nul-truncation", "/etc/passwd\x00.gguf"),
    unreadable("megabyte-path", "/" + "a" * 1_000_000),
    unreadable("lone-surrogate-path", "/etc/\ud800"),
    Case("url-encoded-traversal", "POST", "/v1/models", pull("%2e%2e%2f%2e%2e%2fetc%2fpasswd"), status=HUB_SHAPED,
         absent=("root:",)),
    Case("file-url", "POST", "/v1/models", pull("file:///etc/passwd"), status=HUB_SHAPED, absent=("root:",)),
    Case("hub-dotdot", "POST", "/v1/models", pull("hf.co/../../etc"), status=HUB_SHAPED, absent=("root:",)),
    Case("repo-shaped-cwd-path", "POST", "/v1/models", pull("owner/repo"), status=HUB_SHAPED,
         absent=("secret", "Files:")),
    Case("source-list", "POST", "/v1/models", pull(["/etc"]), param="source"),
    Case("source-null", "POST", "/v1/models", pull(None), param="source"),
    Case("source-missing", "POST", "/v1/models", {"name": "x"}, param="source"),
    Case("body-array", "POST", "/v1/models", [{"source": "/etc"}]),
    Case("body-not-json", "POST", "/v1/models", b"source=/etc"),
    # Model names: what clients normalise in URLs is refused, with the pattern.
    bad_name("name-traversal", "a/../../b"),
    bad_name("name-route-suffix", "x/load"),
    bad_name("name-slash", "org/model"),
    bad_name("name-dotdot", ".."),
    bad_name("name-inner-dotdot", "a..b"),
    bad_name("name-empty", ""),
    bad_name("name-leading-dash", "-rf"),
    bad_name("name-hidden", ".hidden"),
    bad_name("name-accent", "mod\u00e8le"),
    bad_name("name-cjk", "\u540d\u524d"),
    bad_name("name-rtl-override", "a\u202eb"),
    bad_name("name-nul", "a\x00b"),
    bad_name("name-newline", "a\nb"),
    bad_name("name-backslash", "a\\..\\b"),
    bad_name("name-percent", "a%2Fb"),
    bad_name("name-long", "x" * 10_000),
    Case("name-number", "POST", "/v1/models", pull("org/repo", name=1), param="name"),
    # Traversal and junk in management URLs: nothing but the model's own name reaches it.
    not_found("get-encoded-traversal", "GET", "/v1/models/..%2F..%2Fetc%2Fpasswd"),
    not_found("get-raw-traversal", "GET", "/v1/models/../../etc/passwd"),
    not_found("delete-encoded-dotdot", "DELETE", "/v1/models/%2e%2e"),
    not_found("delete-parent-of-model", "DELETE", f"/v1/models/..%2f{MODEL}"),
    not_found("delete-dot-segments", "DELETE", f"/v1/models/{MODEL}/../{MODEL}"),
    not_found("load-encoded-traversal", "POST", f"/v1/models/{MODEL}%2F..%2F..%2Fx/load", {}),
    not_found("load-nul", "POST", "/v1/models/x%00y/load", {}),
    not_found("patch-long-name", "PATCH", "/v1/models/" + "a" * 5000, {"ctx_size": 1024}),
    not_found("get-unicode", "GET", "/v1/models/mod%C3%A8le"),
    not_found("get-backslash-traversal", "GET", "/v1/models/..%5C..%5Cwindows"),
    Case("patch-rename", "PATCH", f"/v1/models/{MODEL}", {"name": "x/y"}, param="name"),
    Case("patch-array", "PATCH", f"/v1/models/{MODEL}", [1]),
    Case("load-broken-json", "POST", f"/v1/models/{MODEL}/load", b"{"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm_gguf: Path) -> Iterator[dict[str, Any]]:
    """The running server, its keys, the operator's import directory and the worker that serves the model."""
    root = tmp_path_factory.mktemp("hostile")
    allowed = root / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "etc").symlink_to("/etc")
    (allowed / "passwd.gguf").symlink_to("/etc/passwd")
    (allowed / "sub" / "hostname.gguf").symlink_to("/etc/hostname")
    (allowed / "loop").symlink_to(allowed / "loop")
    (allowed / "voice.onnx").write_bytes(b"onnx")
    (allowed / "voice.onnx.json").symlink_to("/etc/passwd")
    workdir = root / "cwd"  # the server's working directory holds a repo-shaped folder
    (workdir / "owner" / "repo").mkdir(parents=True)
    (workdir / "owner" / "repo" / "secret.txt").write_text("do not read")
    home = root / "home"
    records = [local_record(MODEL, "llm", {"model": smollm_gguf})]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STACKLET_IMPORT_DIRS", str(allowed))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.chdir(workdir)
        with server_process(home, records) as (url, admin):
            patch.undo()  # the server keeps its environment and working directory
            paths = Settings.load(environ={"STACKLET_HOME": str(home)}).paths
            inference, _ = KeyStore(paths).create("app")
            running = {"url": url, "admin": admin, "inference": inference, "allowed": str(allowed),
                       "models": paths.models}
            assert chat(running)[0] == 200
            running["worker"] = worker_pid(running)
            yield running


def send(server: dict[str, Any], method: str, path: str, body: Any = None, key: str = "admin",
         query: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of one raw request: the path goes out exactly as written."""
    headers = {"Content-Type": "application/json"}
    if key in ("admin", "inference"):
        headers["Authorization"] = f"Bearer {server[key]}"
    elif key != "none":
        headers["Authorization"] = key
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    host, port = server["url"].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


def chat(server: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _, body = send(server, "POST", "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}, key="inference")
    return status, json.loads(body)


def worker_pid(server: dict[str, Any]) -> int:
    status, _, body = send(server, "GET", f"/v1/models/{MODEL}")
    assert status == 200
    return json.loads(body)["worker"]["pid"]


def assert_envelope(error: dict[str, Any], case: Case) -> None:
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] in ("invalid_request_error", "server_error")
    if case.code is not None:
        assert error["code"] == case.code, error
    if case.param is not None:
        assert error["param"] == case.param, error


def assert_still_serving(server: dict[str, Any]) -> None:
    status, _, body = send(server, "GET", "/health", key="none")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, answer = chat(server)
    assert status == 200 and answer["choices"][0]["finish_reason"] in ("length", "stop")
    assert worker_pid(server) == server["worker"]  # the same worker: nothing crashed or reloaded it
    listed = json.loads(send(server, "GET", "/v1/models")[2])["data"]
    assert [(m["id"], m["options"]) for m in listed] == [(MODEL, {})]
    assert not server["models"].exists() or not any(server["models"].rglob("*"))  # nothing linked or copied


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_management_request(server: dict[str, Any], case: Case) -> None:
    path = case.path.replace(ALLOWED, server["allowed"])
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("source"), str):
        body = {**body, "source": body["source"].replace(ALLOWED, server["allowed"])}
    status, content_type, raw = send(server, case.method, path, body, case.key, case.query)
    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    assert status in expected, raw[:500]
    assert status < 500 or status == 503 and 503 in expected
    text = raw.decode("utf-8", "replace")
    for secret in case.absent:
        assert secret not in text
    if status == SSE_ERROR and content_type.startswith("text/event-stream"):  # a pull that failed mid-stream
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
        assert "error" in events[-1] and not any(e.get("event") == "success" for e in events)
        assert_envelope(events[-1]["error"], Case(case.id, "", "", status=0))
    elif status >= 400:
        assert content_type == "application/json"
        assert_envelope(json.loads(raw)["error"], case)
    assert_still_serving(server)
