"""A local Hugging Face hub (and ModelScope) for tests: the endpoints and headers the real clients use.

- `GET /api/models/{repo}[/revision/{rev}]?blobs=True`: repo info with siblings (size, blobId, lfs.sha256);
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: small files answer directly (ETag = git blob sha1); LFS files
  answer 302 to a CDN host (`localhost` instead of `127.0.0.1`, so the client treats it as off-hub) with
  X-Repo-Commit, X-Linked-Etag (sha256) and X-Linked-Size, as the real hub does;
- `GET /cdn/{sha256}`: the bytes, with Range support;
- errors with X-Error-Code: RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo (401 without a
  token, 403 with a wrong one);
- `GET /api/models?search=&filter=&limit=`: the model search (name substring, tags, most downloaded first);
- ModelScope's API over the same repos: `GET /api/v1/models/{repo}/repo/files?Revision=master&Recursive=True`
  (`{"Code": 200, "Success": true, "Data": {"Files": [{"Path", "Type", "Size", "Sha256", ...}]}}`) and
  `GET /api/v1/models/{repo}/repo?Revision=...&FilePath=...` (LFS files redirect to the CDN), and its model
  search `PUT /api/v1/dolphin/models` (`{"Name", "SortBy": "DownloadsCount", "PageSize", ...}` ->
  `{"Code": 200, "Success": true, "Data": {"Model": {"Models": [{"Path", "Name", "Downloads"}], "TotalCount"}}}`).

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
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".bin", ".onnx", ".safetensors", ".ckpt")


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str
    gated_token: str | None = None  # gated repos accept exactly this token
    rewrite_info: Callable[[dict[str, Any]], Any] | None = None  # hostile repo info
    head_headers: dict[str, str] = field(default_factory=dict)  # hostile HEAD headers
    xet: bool = False  # LFS files are Xet-stored: Xet headers, and bytes from the Xet bridge
    tags: tuple[str, ...] = ()  # what the model search filters on
    downloads: int = 0


@dataclass
class HubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)  # sha256s served with wrong bytes
    drop_once: dict[str, int] = field(default_factory=dict)  # sha256 -> bytes to send before dropping
    stall_after: dict[str, int] = field(default_factory=dict)  # sha256 -> bytes to send before hanging
    padding: dict[str, int] = field(default_factory=dict)  # sha256 -> extra bytes served after the file
    expire_after: dict[str, int] = field(default_factory=dict)  # sha256 -> bridge requests before its URL expires
    no_ranges: set[str] = field(default_factory=set)  # sha256s served whole, whatever Range asks
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    client_gone: threading.Event = field(default_factory=threading.Event)  # a stalled download's client closed
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    bodies: list[Any] = field(default_factory=list)  # the JSON bodies of PUT requests
    rewrite_search: Callable[[dict[str, Any]], Any] | None = None  # hostile ModelScope search answers
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

        def do_PUT(self) -> None:
            state.log.append(("PUT", urlsplit(self.path).path, None))
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            state.bodies.append(request)
            if urlsplit(self.path).path != "/api/v1/dolphin/models":
                return self._error(404, "RepoNotFound")
            self._modelscope_search(request)

        def _route(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            state.log.append((self.command, path, self.headers.get("Range")))
            if self.headers.get("Authorization"):
                state.authorized.append(path)
            if path.startswith("/api/v1/models/"):
                return self._modelscope(path.removeprefix("/api/v1/models/"), body)
            if path == "/api/models":
                return self._search()
            if path.startswith("/api/models/"):
                return self._repo_info(path.removeprefix("/api/models/"))
            if path.startswith("/cdn/"):
                return self._blob(path.removeprefix("/cdn/"), body)
            if path.startswith("/xet-bridge/"):
                return self._xet_bridge(path.removeprefix("/xet-bridge/"), body)
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

        def _search(self) -> None:
            """`GET /api/models?search=&filter=&sort=downloads&limit=`: repos whose name contains the search."""
            query = parse_qs(urlsplit(self.path).query)
            word, tags = query.get("search", [""])[0].lower(), query.get("filter", [])
            found = [(name, repo) for name, repo in state.repos.items()
                     if word in name.lower() and all(tag in repo.tags for tag in tags) and repo.gated_token is None]
            found.sort(key=lambda item: -item[1].downloads)
            limit = int(query.get("limit", ["1000"])[0])
            listing = [{"id": name, "modelId": name, "downloads": repo.downloads, "tags": list(repo.tags)}
                       for name, repo in found[:limit]]
            self._send(200, json.dumps(listing).encode(), {"Content-Type": "application/json"})

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
                if repo.xet:
                    headers.update(self._xet_headers(name, revision, sha))
                return self._send(302, b"", {**headers, **repo.head_headers})
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
            headers.update(repo.head_headers)
            self._send(200, data if body else b"", headers, length=len(data))

        def _xet_headers(self, name: str, revision: str, sha: str) -> dict[str, str]:
            """What the real hub adds for a Xet-stored file: its Xet hash, where a client gets a CAS read token
            (X-Xet-Refresh-Route and a Link rel="xet-auth"), and a signed URL on the Xet bridge as Location."""
            hub = f"http://127.0.0.1:{self.server.server_address[1]}"
            token_route = f"/api/models/{name}/xet-read-token/{revision}"
            return {"X-Xet-Hash": hashlib.sha256(b"xet" + sha.encode()).hexdigest(),
                    "X-Xet-Refresh-Route": token_route,
                    "Link": f'<{hub}{token_route}>; rel="xet-auth", <{hub}/cas/reconstructions/{sha}>; '
                            'rel="xet-reconstruction-info"',
                    "Location": f"http://localhost:{self.server.server_address[1]}/xet-bridge/{sha}"
                                "?X-Xet-Signed-Range=bytes%3D0-&Expires=3600&Signature=test"}

        def _xet_bridge(self, sha: str, body: bool) -> None:
            """The Xet bridge: plain HTTP bytes of a Xet file (ranges included), on a signed URL that expires."""
            if sha in state.expire_after:
                state.expire_after[sha] -= 1
                if state.expire_after[sha] < 0:
                    del state.expire_after[sha]
                    return self._send(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message>"
                                           b"</Error>", {"Content-Type": "application/xml"})
            self._blob(sha, body)

        def _modelscope(self, rest: str, body: bool) -> None:
            """ModelScope's file list (`{repo}/repo/files`) and file download (`{repo}/repo?FilePath=`)."""
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            match = re.fullmatch(r"([^/]+/[^/]+)/repo(/files)?", rest)
            name, action = match.groups() if match else ("", None)
            repo = state.repos.get(name)
            if repo is None or query.get("Revision", "master") not in ("master", repo.commit):
                return self._send(404, json.dumps({"Code": 10010205001, "Message": "not found", "Success": False})
                                  .encode(), {"Content-Type": "application/json"})
            if repo.gated_token is not None and self._token() != repo.gated_token:
                return self._send(403 if self._token() else 401, b'{"Code": 401, "Success": false}', {})
            if action:
                return self._modelscope_files(repo)
            data = repo.files.get(query.get("FilePath", ""))
            if data is None:
                return self._send(404, b'{"Code": 404, "Success": false}', {"Content-Type": "application/json"})
            sha = hashlib.sha256(data).hexdigest()
            if is_lfs(query["FilePath"]):  # large files come from a CDN host, as ModelScope's OSS
                return self._send(302, b"", {"Location": f"http://localhost:{self.server.server_address[1]}/cdn/{sha}"})
            self._ranged(sha, data, body)

        def _modelscope_search(self, request: dict[str, Any]) -> None:
            """Repos whose name contains `Name`, most downloaded first (ModelScope's sort "DownloadsCount")."""
            word = str(request.get("Name", "")).lower()
            found = sorted(((name, repo) for name, repo in state.repos.items()
                            if word in name.lower() and repo.gated_token is None), key=lambda item: -item[1].downloads)
            page = found[:int(request.get("PageSize", 10))]
            models = [{"Path": name.split("/")[0], "Name": name.split("/")[1], "Downloads": repo.downloads,
                       "ChineseName": "", "Stars": 0} for name, repo in page]
            found_models = {"Models": models, "TotalCount": len(found)}
            answer: Any = {"Code": 200, "Success": True, "Data": {"Model": found_models}}
            if state.rewrite_search is not None:
                answer = state.rewrite_search(answer)
            self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

        def _modelscope_files(self, repo: Repo) -> None:
            folders = sorted({path.rsplit("/", 1)[0] for path in repo.files if "/" in path})
            entries: list[Any] = [{"Name": f.rsplit("/", 1)[-1], "Path": f, "Type": "tree", "Size": 0} for f in folders]
            entries += [{"Name": path.rsplit("/", 1)[-1], "Path": path, "Type": "blob", "Size": len(data),
                         "Sha256": hashlib.sha256(data).hexdigest(), "Revision": repo.commit, "IsLFS": is_lfs(path)}
                        for path, data in sorted(repo.files.items())]
            info: Any = {"Code": 200, "Success": True, "Data": {"Files": entries}}
            if repo.rewrite_info is not None:
                info = repo.rewrite_info(info)
            self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})

        def _blob(self, sha: str, body: bool) -> None:
            data = state.blobs.get(sha)
            if data is None:
                return self._error(404, "EntryNotFound")
            if sha in state.corrupt:
                data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
            data += b"\0" * state.padding.get(sha, 0)
            self._ranged(sha, data, body)

        def _ranged(self, key: str, data: bytes, body: bool) -> None:
            """`data` whole, or the part a `Range: bytes=START-[END]` header asks for (206)."""
            start, end = 0, len(data) - 1
            asked = "" if key in state.no_ranges else self.headers.get("Range") or ""
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", asked)
            if match:
                start = int(match.group(1))
                end = min(end, int(match.group(2))) if match.group(2) else end
            part = data[start:end + 1]
            ranged = match is not None and (start or end < len(data) - 1)
            headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}"} if ranged else {}
            headers["Content-Type"] = "application/octet-stream"
            self.send_response(206 if ranged else 200)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            if body:
                self._stream(key, part)

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
              pooling: int | None = None, extra: bytes = b"", layers: int | None = None,
              heads: tuple[int, int] | None = None) -> bytes:
    """A valid GGUF of a few hundred bytes (one tiny tensor); `extra` makes otherwise equal files differ.
    `layers` and `heads` (attention heads, KV heads) give it the dimensions a KV-cache estimate reads."""
    import tempfile

    import gguf
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.gguf"
        writer = gguf.GGUFWriter(str(path), arch)
        writer.add_context_length(2048)
        writer.add_embedding_length(8)
        if layers is not None:
            writer.add_block_count(layers)
        if heads is not None:
            writer.add_head_count(heads[0])
            writer.add_head_count_kv(heads[1])
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
