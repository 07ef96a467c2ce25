"""A local Hugging Face hub for tests: the endpoints and headers the real huggingface_hub client uses.

- `GET /api/models/{repo}[/revision/{rev}]?blobs=True`: repo info with siblings (size, blobId, lfs.sha256);
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: small files answer directly (ETag = git blob sha1); LFS files
  answer 302 to a CDN host (`localhost` instead of `127.0.0.1`, so the client treats it as off-hub) with
  X-Repo-Commit, X-Linked-Etag (sha256) and X-Linked-Size, as the real hub does;
- `GET /cdn/{sha256}`: the bytes, with Range support;
- errors with X-Error-Code: RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo (401 without a
  token, 403 with a wrong one).

Fault injection: `drop_once` closes the connection mid-file once; `stall_after` sends part of a file and
then hangs until released (or until the client closes the connection: `client_gone`); `corrupt` serves
bytes that do not match the advertised sha256; `padding` serves extra bytes after a file. Hostile answers:
a repo's `rewrite_info` rewrites its repo info JSON (file names, commit, sizes, hashes) before it is sent,
and `head_headers` overrides headers of its HEAD answers (ETag, sizes).
"""

from __future__ import annotations

import hashlib
import json
import re
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".bin", ".onnx", ".safetensors", ".ckpt")


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str
    gated_token: str | None = None  # gated repos accept exactly this token
    rewrite_info: Callable[[dict[str, Any]], Any] | None = None  # hostile repo info
    head_headers: dict[str, str] = field(default_factory=dict)  # hostile HEAD headers


@dataclass
class HubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)  # sha256s served with wrong bytes
    drop_once: dict[str, int] = field(default_factory=dict)  # sha256 -> bytes to send before dropping
    stall_after: dict[str, int] = field(default_factory=dict)  # sha256 -> bytes to send before hanging
    padding: dict[str, int] = field(default_factory=dict)  # sha256 -> extra bytes served after the file
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    client_gone: threading.Event = field(default_factory=threading.Event)  # a stalled download's client closed
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    authorized: list[str] = field(default_factory=list)  # paths requested with an Authorization header
    blobs: dict[str, bytes] = field(default_factory=dict)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


class FakeHub:
    def __init__(self) -> None:
        self.state = HubState()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.state.release.set()
        self.server.shutdown()
        self.server.server_close()

    def add_repo(self, repo: str, files: dict[str, bytes], gated_token: str | None = None) -> Repo:
        commit = hashlib.sha1((repo + "".join(sorted(files))).encode()).hexdigest()
        self.state.repos[repo] = Repo(files, commit, gated_token)
        for data in files.values():
            self.state.blobs[hashlib.sha256(data).hexdigest()] = data
        return self.state.repos[repo]

    def requests(self, method: str, contains: str = "") -> list[tuple[str, str, str | None]]:
        return [entry for entry in self.state.log if entry[0] == method and contains in entry[1]]


def _handler(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._route(body=False)

        def do_GET(self) -> None:
            self._route(body=True)

        def _route(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            state.log.append((self.command, path, self.headers.get("Range")))
            if self.headers.get("Authorization"):
                state.authorized.append(path)
            if path.startswith("/api/models/"):
                return self._repo_info(path.removeprefix("/api/models/"))
            if path.startswith("/cdn/"):
                return self._blob(path.removeprefix("/cdn/"), body)
            match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if match:
                return self._resolve(*match.groups(), body=body)
            self._error(404, "RepoNotFound")

        def _repo(self, name: str, revision: str) -> Repo | None:
            repo = state.repos.get(name)
            if repo is None:
                self._error(404, "RepoNotFound")
            elif repo.gated_token is not None and self._token() != repo.gated_token:
                self._error(403 if self._token() else 401, "GatedRepo")
            elif revision not in ("main", repo.commit):
                self._error(404, "RevisionNotFound")
            else:
                return repo
            return None

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

        def _repo_info(self, rest: str) -> None:
            name, _, revision = rest.partition("/revision/")
            repo = self._repo(name, revision or "main")
            if repo is None:
                return
            siblings = []
            for path, data in sorted(repo.files.items()):
                entry = {"rfilename": path, "size": len(data), "blobId": git_blob_sha1(data)}
                if is_lfs(path):
                    entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                siblings.append(entry)
            info: Any = {"id": name, "modelId": name, "sha": repo.commit, "siblings": siblings}
            if repo.rewrite_info is not None:
                info = repo.rewrite_info(info)
            payload = json.dumps(info).encode()
            self._send(200, payload, {"Content-Type": "application/json"})

        def _resolve(self, name: str, revision: str, path: str, body: bool) -> None:
            repo = self._repo(name, revision)
            if repo is None:
                return
            data = repo.files.get(path)
            if data is None:
                return self._error(404, "EntryNotFound", {"X-Repo-Commit": repo.commit})
            headers = {"X-Repo-Commit": repo.commit}
            if is_lfs(path):
                sha = hashlib.sha256(data).hexdigest()
                headers.update({"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                                "ETag": f'"{git_blob_sha1(data)}"',
                                "Location": f"http://localhost:{self.server.server_address[1]}/cdn/{sha}"})
                return self._send(302, b"", {**headers, **repo.head_headers})
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
            headers.update(repo.head_headers)
            self._send(200, data if body else b"", headers, length=len(data))

        def _blob(self, sha: str, body: bool) -> None:
            data = state.blobs.get(sha)
            if data is None:
                return self._error(404, "EntryNotFound")
            if sha in state.corrupt:
                data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
            data += b"\0" * state.padding.get(sha, 0)
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match:
                start = int(match.group(1))
            part = data[start:]
            status = 206 if start else 200
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
            headers["Content-Type"] = "application/octet-stream"
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            if body:
                self._stream(sha, part)

        def _stream(self, sha: str, part: bytes) -> None:
            if sha in state.drop_once:
                cut = state.drop_once.pop(sha)
                self.wfile.write(part[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if sha in state.stall_after:
                cut = state.stall_after.pop(sha)
                self.wfile.write(part[:cut])
                self.wfile.flush()
                state.stalled.set()
                while not state.release.wait(0.05):
                    if self._client_closed():
                        state.client_gone.set()
                        break
                self.close_connection = True
                return
            self.wfile.write(part)

        def _client_closed(self) -> bool:
            readable, _, _ = select.select([self.connection], [], [], 0)
            try:
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        def _error(self, status: int, code: str, extra: dict[str, str] | None = None) -> None:
            payload = json.dumps({"error": code}).encode()
            self._send(status, payload, {"X-Error-Code": code, "X-Error-Message": code,
                                         "Content-Type": "application/json", **(extra or {})})

        def _send(self, status: int, payload: bytes, headers: dict[str, str], length: int | None = None) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload) if length is None else length))
            self.end_headers()
            if payload and self.command != "HEAD":
                self.wfile.write(payload)

    return Handler


def tiny_gguf(arch: str = "llama", *, template: str | None = "{{ bos_token }}{{ messages }}",
              pooling: int | None = None, extra: bytes = b"") -> bytes:
    """A valid GGUF of a few hundred bytes (one tiny tensor); `extra` makes otherwise equal files differ."""
    import tempfile

    import gguf
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.gguf"
        writer = gguf.GGUFWriter(str(path), arch)
        writer.add_context_length(2048)
        writer.add_embedding_length(8)
        if template:
            writer.add_chat_template(template)
        if pooling is not None:
            writer.add_pooling_type(gguf.PoolingType(pooling))
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes() + extra


def store_contents(models_dir: Path) -> list[str]:
    """Every file, link and folder in the store, relative to it; huggingface_hub's empty lock files aside."""
    return sorted(p.relative_to(models_dir).as_posix() for p in models_dir.rglob("*")
                  if p.relative_to(models_dir).parts[0] != ".locks")
