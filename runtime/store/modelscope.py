"""ModelScope (modelscope.cn) as a model source, through its HTTP API as the `modelscope` library speaks it:

- `GET {endpoint}/api/v1/models/{owner}/{name}/repo/files?Revision=master&Recursive=True`: the file list,
  `{"Code": 200, "Success": true, "Data": {"Files": [{"Path", "Type": "blob"|"tree", "Size", "Sha256"}]}}`;
- `GET {endpoint}/api/v1/models/{owner}/{name}/repo?Revision=...&FilePath=...`: a file's bytes, with ranges;
- `PUT {endpoint}/api/v1/dolphin/models` with `{"Name": word, "SortBy": "DownloadsCount", "PageSize": n, ...}`: the
  model search ModelScope's site, its MCP server and GPUStack use (the library has none), answered with
  `{"Code": 200, "Data": {"Model": {"Models": [{"Path": owner, "Name": name, "Downloads": n}]}}}`.

The `modelscope` package is not a dependency: its downloader has no cancellation, keeps no partial in the
store's layout and brings requests, tqdm and its own cache; the store's download (resume, sha256, the
checks on everything the hub answers) is the one Hugging Face pulls use. Files land in the same cache
layout, under `models--modelscope--owner--name`, with a snapshot named by the listing's content (the API
gives no commit for a revision).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from runtime.errors import GatedRepoError, HubResponseError, HubUnreachableError, RepoNotFoundError, StoreError
from runtime.store import layout
from runtime.store.hub import (
    MAX_FILE_BYTES,
    Cancelled,
    RemoteFile,
    RepoListing,
    dropped_when_unusable,
    fetch,
    get_json,
    is_repo_id,
    never,
    place,
    put_json,
    read_start,
    transport_errors,
)

DEFAULT_ENDPOINT = "https://modelscope.cn"
DEFAULT_REVISION = "master"
MAX_FILES = 100_000
UNREACHABLE_HINT = ("Check the network, set MODELSCOPE_ENDPOINT to a mirror, or pull from Hugging Face "
                    "(hf.co/owner/repo).")


def endpoint_from_env() -> str:
    """MODELSCOPE_ENDPOINT, else the older MODELSCOPE_DOMAIN (a host name), as the modelscope library reads them."""
    endpoint = os.environ.get("MODELSCOPE_ENDPOINT", "").strip()
    if endpoint:
        return endpoint
    domain = os.environ.get("MODELSCOPE_DOMAIN", "").strip()
    if domain:
        return domain if domain.startswith(("http://", "https://")) else f"https://{domain}"
    return DEFAULT_ENDPOINT


class ModelScope:
    """A ModelScope endpoint and the token (MODELSCOPE_API_TOKEN) to use with it."""

    def __init__(self, models_dir: Path, token: str | None = None, endpoint: str | None = None) -> None:
        self.models_dir = models_dir
        self.token = token or os.environ.get("MODELSCOPE_API_TOKEN") or None
        self.endpoint = (endpoint or endpoint_from_env()).rstrip("/")

    def repo_dir(self, repo: str) -> Path:
        return layout.repo_dir(self.models_dir, f"modelscope/{repo}")

    def list_files(self, repo: str, revision: str | None = None) -> RepoListing:
        revision = revision or DEFAULT_REVISION
        url = f"{self.endpoint}/api/v1/models/{repo}/repo/files"
        with self._errors(repo, revision):
            try:
                body = get_json(url, self._headers(), {"Revision": revision, "Recursive": "True"})
            except ValueError:
                raise self._bad_answer(repo, "file list", "(not JSON)") from None
        entries = self._entries(repo, revision, body)
        files = [self._remote_file(repo, e) for e in entries if isinstance(e, dict) and e.get("Type") != "tree"]
        commit = layout.local_commit([revision, *(f"{f.path}:{f.sha256}:{f.size}" for f in files)])
        return RepoListing(repo, revision, commit, {f.path: f for f in files})

    def search(self, query: str, limit: int) -> list[tuple[str, int]]:
        """(repo, downloads) of up to `limit` repos whose name contains `query`, most downloaded first. By name
        only: what a repo holds is read from its file list (runtime.store.search), not from tags."""
        body = {"Name": query, "Criterion": [], "SingleCriterion": [], "SortBy": "DownloadsCount", "PageNumber": 1,
                "PageSize": limit}
        with transport_errors(self.endpoint, UNREACHABLE_HINT, self._search_error):
            try:
                answer = put_json(f"{self.endpoint}/api/v1/dolphin/models", self._headers(), body)
            except ValueError:
                raise self._bad_answer(query, "search result", "(not JSON)") from None
        repos = []
        for model in self._found_models(query, answer)[:limit]:
            owner, name, downloads = model.get("Path"), model.get("Name"), model.get("Downloads")
            repo = f"{owner}/{name}"
            if isinstance(owner, str) and isinstance(name, str) and is_repo_id(repo):  # else no repo: left out
                counted = isinstance(downloads, int) and not isinstance(downloads, bool) and downloads >= 0
                repos.append((repo, downloads if counted else 0))
        return repos

    def _found_models(self, query: str, answer: Any) -> list[dict[str, Any]]:
        data = answer.get("Data") if isinstance(answer, dict) else None
        found = data.get("Model") if isinstance(data, dict) else None
        models = found.get("Models") if isinstance(found, dict) else None
        if not isinstance(models, list) or answer.get("Code", 200) not in (200, "200"):
            raise self._bad_answer(query, "search result", type(models).__name__)
        return [model for model in models if isinstance(model, dict)]

    def _search_error(self, status: int) -> Exception:
        if status >= 500 or status == 429:
            return HubUnreachableError(f"{self.endpoint} answered HTTP {status}; try again later.", retry_after=30)
        return StoreError(f"{self.endpoint} answered HTTP {status} to the model search. If MODELSCOPE_ENDPOINT "
                          "points at a mirror, it may not offer one: pull by name (ms://owner/repo).")

    def download(self, listing: RepoListing, file: RemoteFile, on_bytes: Callable[[int], None],
                 cancelled: Cancelled = never) -> Path:
        """Fetch one file into the cache (resuming a partial) and return its snapshot path."""
        if not file.sha256:  # nothing to verify it against: it never enters the store
            raise self._bad_answer(listing.repo, f"sha256 for {file.path}", "(none)")
        name = file.sha256

        def fetch_into(partial: Path) -> None:
            with self._errors(listing.repo, listing.revision, file.path), dropped_when_unusable(partial, file):
                fetch(self._file_url(listing, file), self._headers(), partial, file.size, on_bytes, cancelled,
                      file.path)

        return place(self.models_dir, self.repo_dir(listing.repo), listing, file, name, file.size, on_bytes,
                     fetch_into)

    def read_start(self, listing: RepoListing, file: RemoteFile, limit: int) -> bytes:
        with self._errors(listing.repo, listing.revision, file.path):
            return read_start(self._file_url(listing, file), self._headers(), limit)

    def _file_url(self, listing: RepoListing, file: RemoteFile) -> str:
        return (f"{self.endpoint}/api/v1/models/{quote(listing.repo)}/repo?Revision={quote_plus(listing.revision)}"
                f"&FilePath={quote_plus(file.path)}")

    def _headers(self) -> dict[str, str]:
        # httpx drops Authorization on a redirect to another host (the CDN a large file may come from).
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _entries(self, repo: str, revision: str, body: Any) -> list[Any]:
        if not isinstance(body, dict):
            raise self._bad_answer(repo, "file list", body)
        if body.get("Success") is False or body.get("Code", 200) not in (200, "200"):
            message = str(body.get("Message") or body.get("Code"))[:200]
            raise RepoNotFoundError(f"{self.endpoint} has no {repo} at revision '{revision}': {message}.")
        data = body.get("Data")
        files = data.get("Files") if isinstance(data, dict) else data
        if not isinstance(files, list) or len(files) > MAX_FILES:
            raise self._bad_answer(repo, "file list", type(files).__name__)
        return files

    def _remote_file(self, repo: str, entry: dict[str, Any]) -> RemoteFile:
        """One file of the listing, refused when its name, size or hash cannot be right."""
        path, size, sha256 = entry.get("Path"), entry.get("Size"), entry.get("Sha256") or None
        if not layout.is_relative_name(path):
            raise self._bad_answer(repo, "file name", path)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_BYTES:
            raise self._bad_answer(repo, f"size for {path}", size)
        if sha256 is not None and not (isinstance(sha256, str) and layout.SHA256.fullmatch(sha256)):
            raise self._bad_answer(repo, f"sha256 for {path}", sha256)
        return RemoteFile(str(path), size, sha256, None)

    def _bad_answer(self, repo: str, what: str, value: object) -> HubResponseError:
        shown = value[:80] if isinstance(value, str) else value
        return HubResponseError(f"{self.endpoint} sent an invalid {what} for {repo}: {repr(shown)[:100]}. Nothing was "
                                "stored; if MODELSCOPE_ENDPOINT points at a mirror, check it.")

    @contextmanager
    def _errors(self, repo: str, revision: str, path: str | None = None) -> Iterator[None]:
        def status_error(status: int) -> Exception:
            if status in (401, 403):
                return GatedRepoError(f"Access to {repo} on {self.endpoint} denied (HTTP {status}): set "
                                      "MODELSCOPE_API_TOKEN or pass --token.")
            if status == 404:
                what = f"{path} is not in {repo}@{revision}" if path else f"Repository {repo} (revision '{revision}')" \
                       " not found"
                return RepoNotFoundError(f"{what} on {self.endpoint}. Check the name.")
            if status >= 500 or status == 429:
                return HubUnreachableError(f"{self.endpoint} answered HTTP {status}; try again later.", retry_after=30)
            return StoreError(f"{self.endpoint} answered HTTP {status} for {repo}.")

        with transport_errors(self.endpoint, UNREACHABLE_HINT, status_error):
            yield
