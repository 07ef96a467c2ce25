"""The only importer of huggingface_hub: list a repo's files and download blobs into the HF cache layout.
ModelScope pulls (runtime.store.modelscope) go through the same download and verification functions.

Downloads go to `blobs/<hash>.incomplete`, a fixed name that survives Ctrl-C (and a stopped server) so the
next pull resumes with a Range request (huggingface_hub's own `hf_hub_download` deletes its partial files on
failure). A blob is renamed into place only after its checksum matched the hub's metadata, so a corrupt
download never enters the cache. Whatever the hub (or a mirror) answers is checked before it names a path:
file names are plain relative paths, commits are 40 hex digits, blobs are named by their hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from runtime.errors import (
    ChecksumMismatchError,
    FileNotInRepoError,
    GatedRepoError,
    HubResponseError,
    HubUnreachableError,
    InsufficientStorageError,
    PullCancelledError,
    RepoNotFoundError,
    StoreError,
)
from runtime.store import layout

DEFAULT_ENDPOINT = "https://huggingface.co"
DOWNLOAD_TIMEOUT_S = 10  # per read, as huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT
RETRIES = 5  # dropped connections in a row without progress before a download gives up
CANCEL_POLL_S = 0.1
MAX_FILE_BYTES = 1 << 50
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
CANCELLED_MESSAGE = ("The pull stopped early: its client went away or the server is stopping. "
                     "The partial download is kept: pull again to resume.")

Cancelled = Callable[[], bool]


def is_repo_id(name: object) -> bool:
    """`owner/name` as a hub's search may name a repo; anything else (a path, `..`) is no repo to list."""
    return isinstance(name, str) and bool(REPO_ID.fullmatch(name)) and not {".", ".."} & set(name.split("/"))


def never() -> bool:
    return False


def raise_if_cancelled(cancelled: Cancelled) -> None:
    if cancelled():
        raise PullCancelledError(CANCELLED_MESSAGE)


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files: the content hash the hub publishes
    blob_id: str | None  # git blob sha1 (checks small non-LFS files)


@dataclass(frozen=True)
class RepoListing:
    repo: str
    revision: str
    commit: str
    files: dict[str, RemoteFile]


class Hub:
    """A Hugging Face endpoint (HF_ENDPOINT mirrors included) and the token to use with it."""

    def __init__(self, models_dir: Path, token: str | None = None, endpoint: str | None = None) -> None:
        self.models_dir = models_dir
        self.token = token or os.environ.get("HF_TOKEN") or None
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")

    def list_files(self, repo: str, revision: str | None = None) -> RepoListing:
        from huggingface_hub import HfApi

        revision = revision or "main"
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise HubUnreachableError(
                "Offline mode: HF_HUB_OFFLINE is set, so nothing is fetched from the Hub. "
                "Unset it, or import a local file with `stacklet pull PATH`.",
                retry_after=30,
            )
        with self._errors(repo, revision):
            try:
                info = HfApi(endpoint=self.endpoint).model_info(
                    repo, revision=revision, files_metadata=True, token=self.token
                )
            except (KeyError, TypeError, ValueError, AttributeError):  # not JSON, or not the shape of repo info
                raise self._bad_answer(repo, "repo info", "(unreadable)") from None
        if not isinstance(info.sha, str) or not layout.COMMIT.fullmatch(info.sha):
            raise self._bad_answer(repo, "commit", info.sha)
        files = [self._remote_file(repo, s) for s in info.siblings or []]
        return RepoListing(repo, revision, info.sha, {f.path: f for f in files})

    def search(self, query: str, tag: str, limit: int) -> list[tuple[str, int]]:
        """(repo, downloads) of the repos whose name contains `query` and that carry `tag`, most downloaded first."""
        from huggingface_hub import HfApi

        with self._errors(query, "main"):
            try:
                found = list(HfApi(endpoint=self.endpoint).list_models(
                    search=query, filter=tag, sort="downloads", limit=limit, token=self.token))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise self._bad_answer(query, "search result", "(unreadable)") from None
        return [(m.id, m.downloads if isinstance(m.downloads, int) else 0) for m in found
                if is_repo_id(m.id)]

    def download(self, listing: RepoListing, file: RemoteFile, on_bytes: Callable[[int], None],
                 cancelled: Cancelled = never) -> Path:
        """Fetch one file into the cache (resuming a partial) and return its snapshot path.

        Xet-stored files (the hub answers with X-Xet-Hash) come through the hub's Xet bridge: the redirect's
        Location serves their bytes over plain HTTP with ranges, so they resume and verify as any other file;
        hf_xet is never involved."""
        meta, location, headers = self._locate(listing, file)
        if meta.size is not None and file.size and meta.size != file.size:
            raise self._bad_answer(listing.repo, f"size for {file.path}", meta.size)
        size = file.size if meta.size is None else meta.size
        name = file.sha256 or file.blob_id or meta.etag or ""
        if not (layout.COMMIT.fullmatch(name) or layout.SHA256.fullmatch(name)):
            raise self._bad_answer(listing.repo, f"ETag for {file.path}", meta.etag)
        return place(self.models_dir, self.repo_dir(listing.repo), listing, file, name, size, on_bytes,
                     lambda partial: self._fetch_into(listing, file, (location, headers), partial, size, on_bytes,
                                                      cancelled))

    def repo_dir(self, repo: str) -> Path:
        return layout.repo_dir(self.models_dir, repo)

    def read_start(self, listing: RepoListing, file: RemoteFile, limit: int) -> bytes:
        """The first `limit` bytes of a file (a GGUF header), with one range request."""
        _, location, headers = self._locate(listing, file)
        with self._errors(listing.repo, listing.revision, file.path):
            return read_start(location, headers, limit)

    def _locate(self, listing: RepoListing, file: RemoteFile) -> tuple[Any, str, dict[str, str]]:
        """The file's metadata, where its bytes are, and the headers to fetch them with."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.file_download import get_hf_file_metadata
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(listing.repo, file.path, revision=listing.commit, endpoint=self.endpoint)
        with self._errors(listing.repo, listing.revision, file.path):
            meta = get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint)
        # The token goes to the hub only, never to the CDN (or Xet bridge) a large file redirects to.
        same_host = urlsplit(meta.location).netloc == urlsplit(url).netloc
        return meta, meta.location, build_hf_headers(token=self.token if same_host else False)

    def _fetch_into(self, listing: RepoListing, file: RemoteFile, located: tuple[str, dict[str, str]],
                    partial: Path, size: int, on_bytes: Callable[[int], None], cancelled: Cancelled) -> None:
        def relocate() -> tuple[str, dict[str, str]]:
            _, url, headers = self._locate(listing, file)
            return url, headers

        with self._errors(listing.repo, listing.revision, file.path), dropped_when_unusable(partial, file):
            fetch(*located, partial, size, on_bytes, cancelled, file.path, relocate)

    def _remote_file(self, repo: str, sibling: Any) -> RemoteFile:
        """One file of the listing, refused when the hub's name, size or hashes cannot be right."""
        path = sibling.rfilename
        if not layout.is_relative_name(path):
            raise self._bad_answer(repo, "file name", path)
        lfs = sibling.lfs
        size = lfs.size if lfs else sibling.size or 0
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_BYTES:
            raise self._bad_answer(repo, f"size for {path}", size)
        sha256 = lfs.sha256 if lfs else None
        if sha256 is not None and not (isinstance(sha256, str) and layout.SHA256.fullmatch(sha256)):
            raise self._bad_answer(repo, f"sha256 for {path}", sha256)
        blob_id = sibling.blob_id
        if blob_id is not None and not (isinstance(blob_id, str) and layout.COMMIT.fullmatch(blob_id)):
            raise self._bad_answer(repo, f"blob id for {path}", blob_id)
        return RemoteFile(path, size, sha256, blob_id)

    def _bad_answer(self, repo: str, what: str, value: object) -> HubResponseError:
        shown = value[:80] if isinstance(value, str) else value
        return HubResponseError(
            f"{self.endpoint} sent an invalid {what} for {repo}: {repr(shown)[:100]}. Nothing was stored; "
            "if HF_ENDPOINT points at a mirror, check it."
        )

    @contextmanager
    def _errors(self, repo: str, revision: str, path: str | None = None) -> Iterator[None]:
        """huggingface_hub and transport errors -> StackletErrors that say what to do next."""
        import httpx2
        from huggingface_hub import errors as hf

        try:
            yield
        except hf.GatedRepoError:
            raise GatedRepoError(
                f"{repo} is gated: accept its terms on the Hub, then set HF_TOKEN or pass --token."
            ) from None
        except hf.RevisionNotFoundError:
            raise RepoNotFoundError(f"Revision '{revision}' not found in {repo}.", param="revision") from None
        except hf.RemoteEntryNotFoundError:
            raise FileNotInRepoError(f"{path} is not in {repo}@{revision}.", param="file") from None
        except hf.RepositoryNotFoundError:
            raise RepoNotFoundError(
                f"Repository {repo} not found on {self.endpoint}. "
                "Check the name; private repos need HF_TOKEN or --token."
            ) from None
        except hf.HfHubHTTPError as exc:
            raise _http_error(exc, repo, self.endpoint) from None
        except (httpx2.TransportError, hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError) as exc:
            raise HubUnreachableError(
                f"Cannot reach {self.endpoint} ({type(exc).__name__}). Check the network, set HF_ENDPOINT "
                "to a mirror, pull from ModelScope instead (ms://owner/repo, or STACKLET_HUB=modelscope), or "
                "import a local file with `stacklet pull PATH`.",
                retry_after=30,
            ) from None
        except OSError as exc:  # a file the download could not write (disk full is mapped where it happens)
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(f"Download of {path or repo} failed: {first_line}. Pull again to resume.") from None


def place(models_dir: Path, repo_dir: Path, listing: RepoListing, file: RemoteFile, name: str, size: int,
          on_bytes: Callable[[int], None], fetch_into: Callable[[Path], None]) -> Path:
    """The blob `name` of `file` in `repo_dir` (fetched into its `.incomplete` partial unless it is there, then
    verified and renamed into place), linked into the snapshot of `listing.commit`."""
    from huggingface_hub.utils import WeakFileLock

    blob = layout.blob_path(repo_dir, name)
    with WeakFileLock(str(models_dir / ".locks" / repo_dir.name / f"{name}.lock")):
        if not blob.exists():
            partial = blob.with_name(name + ".incomplete")
            fetch_into(partial)
            got = partial.stat().st_size
            if got != size:
                partial.unlink()
                raise HubResponseError(f"{file.path} arrived with {got} bytes instead of {size}. It was discarded; "
                                       "pull again.")
            _verify(partial, file)
            partial.replace(blob)
        else:
            on_bytes(size)
    return layout.link_snapshot(repo_dir, listing.commit, file.path, blob)


def read_start(url: str, headers: dict[str, str], limit: int) -> bytes:
    """Up to `limit` bytes from the start of `url`: a range request, cut short when a server ignores the range."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    data = bytearray()
    with get_session().stream("GET", url, headers={**headers, "Range": f"bytes=0-{limit - 1}"},
                              timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=True) as response:
        hf_raise_for_status(response)
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= limit:
                break
    return bytes(data[:limit])


MAX_LISTING_BYTES = 64 << 20  # a JSON file list (the largest real repos list a few MB)


def get_json(url: str, headers: dict[str, str], params: dict[str, str]) -> Any:
    """GET a JSON document (ValueError when it is not JSON or too large to be a file list)."""
    return _json("GET", url, headers, params=params)


def put_json(url: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
    """PUT a JSON body and read the JSON answer, as `get_json` reads it (ModelScope's model search)."""
    return _json("PUT", url, headers, json=body)


def _json(method: str, url: str, headers: dict[str, str], **request: Any) -> Any:
    from huggingface_hub.utils import get_session, hf_raise_for_status

    with get_session().stream(method, url, headers=headers, timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=True,
                              **request) as response:
        hf_raise_for_status(response)
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_LISTING_BYTES:
                raise ValueError("the answer is larger than any file list")
    return json.loads(body)


@contextmanager
def transport_errors(endpoint: str, hint: str, status_error: Callable[[int], Exception]) -> Iterator[None]:
    """For hubs other than Hugging Face: an HTTP error status -> `status_error(status)`, a hub out of reach ->
    HubUnreachableError that ends with `hint`."""
    import httpx2
    from huggingface_hub import errors as hf

    try:
        yield
    except hf.HfHubHTTPError as exc:
        raise status_error(exc.response.status_code if exc.response is not None else 0) from None
    except httpx2.TransportError as exc:
        raise HubUnreachableError(f"Cannot reach {endpoint} ({type(exc).__name__}). {hint}", retry_after=30) from None


def _http_error(exc: Any, repo: str, endpoint: str) -> Exception:
    status = exc.response.status_code if exc.response is not None else 0
    if status in (401, 403):
        return GatedRepoError(f"Access to {repo} denied (HTTP {status}): set HF_TOKEN or pass --token.")
    if status >= 500 or status == 429:
        return HubUnreachableError(f"{endpoint} answered HTTP {status}; try again later.", retry_after=30)
    return StoreError(f"{endpoint} answered HTTP {status} for {repo}.")


@contextmanager
def dropped_when_unusable(partial: Path, file: RemoteFile) -> Iterator[None]:
    """A partial that can never complete goes: one the hub overfilled, or one the full disk cut short
    (it would hold the space the user has to free). Every other failure keeps it for the next pull."""
    try:
        yield
    except HubResponseError:
        partial.unlink(missing_ok=True)
        raise
    except OSError as exc:
        if not layout.disk_full(exc):
            raise
        partial.unlink(missing_ok=True)
        raise InsufficientStorageError(
            f"The disk is full: {file.path} ({file.size / 1e9:.1f} GB) did not fit. Free some space, then pull "
            "again."
        ) from None


def fetch(url: str, headers: dict[str, str], partial: Path, size: int, on_bytes: Callable[[int], None],
          cancelled: Cancelled, file_name: str, relocate: Callable[[], tuple[str, dict[str, str]]] | None = None,
          ) -> None:
    """GET `url` into `partial` (resuming what it holds) until it has `size` bytes. A dropped connection
    resumes where it stopped; RETRIES drops in a row without progress and the error stands. A CDN (or Xet
    bridge) URL is signed and expires (after about an hour; a long download outlives it): when it is refused,
    `relocate` asks the hub for a fresh one, once, and the download goes on from there."""
    import httpx2
    from huggingface_hub import errors as hf

    _check_space(partial, size, file_name)
    with partial.open("ab") as out:
        if out.tell() > size:  # a stale partial of a different file version
            out.truncate(0)
        if out.tell():
            on_bytes(out.tell())
        failures = 0
        while out.tell() < size:
            start, error = out.tell(), None
            try:
                _get(url, out, size, headers, on_bytes, cancelled)
            except httpx2.TransportError as exc:
                if cancelled():
                    raise PullCancelledError(CANCELLED_MESSAGE) from None
                error = exc
            except hf.HfHubHTTPError as exc:
                if relocate is None or exc.response is None or exc.response.status_code not in (401, 403):
                    raise
                url, headers = relocate()
                relocate = None
                continue
            failures = 0 if out.tell() > start else failures + 1
            if failures > RETRIES:
                if error is not None:
                    raise error
                raise HubResponseError(f"{urlsplit(url).netloc} stopped sending at {start} of {size} bytes.")
            if out.tell() < size:
                _pause(1.0, cancelled)


def _get(url: str, out: BinaryIO, size: int, headers: dict[str, str], on_bytes: Callable[[int], None],
         cancelled: Cancelled) -> None:
    from huggingface_hub.utils import get_session, hf_raise_for_status

    have = out.tell()
    if have:
        headers = {**headers, "Range": f"bytes={have}-"}
    with get_session().stream("GET", url, headers=headers, timeout=DOWNLOAD_TIMEOUT_S,
                              follow_redirects=True) as response:
        hf_raise_for_status(response)
        if have and response.status_code != 206:  # the server ignored the range: start over
            out.truncate(0)
            on_bytes(-have)
        with _interrupted_when(cancelled, response):
            for chunk in response.iter_bytes():
                raise_if_cancelled(cancelled)
                if out.tell() + len(chunk) > size:
                    raise HubResponseError(f"{urlsplit(url).netloc} sent more than the {size} bytes it announced. "
                                           "The download was discarded.")
                out.write(chunk)
                on_bytes(len(chunk))


@contextmanager
def _interrupted_when(cancelled: Cancelled, response: Any) -> Iterator[None]:
    """Shut the connection down as soon as the pull is cancelled, so a read blocked on a stalled hub returns
    at once instead of after its timeout (and the retries after that)."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(CANCEL_POLL_S):
            if cancelled():
                with suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also under TLS
                return

    if sock is not None and cancelled is not never:
        threading.Thread(target=watch, name="pull-cancel", daemon=True).start()
    try:
        yield
    finally:
        finished.set()


def _pause(seconds: float, cancelled: Cancelled) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        raise_if_cancelled(cancelled)
        time.sleep(CANCEL_POLL_S)


def _check_space(partial: Path, size: int, file_name: str) -> None:
    """Refuse a download the disk cannot hold before it starts (the hub's size, less what the partial has)."""
    import shutil

    have = partial.stat().st_size if partial.exists() else 0
    needed, free = size - have if have <= size else size, shutil.disk_usage(partial.parent).free
    if needed > free:
        raise InsufficientStorageError(
            f"Not enough disk space for {file_name}: it needs {needed / 1e9:.1f} GB more, {free / 1e9:.1f} GB "
            "are free. Free some space, then pull again."
        )


def _verify(path: Path, file: RemoteFile) -> None:
    """LFS files against their sha256, small files against their git blob id; a mismatch drops the partial."""
    if file.sha256:
        actual, expected = layout.sha256_of(path), file.sha256
    elif file.blob_id:
        actual, expected = _git_blob_sha1(path), file.blob_id
    else:
        return
    if actual != expected:
        path.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"Checksum mismatch for {file.path}: expected {expected}, got {actual}. "
            "The partial download was discarded; pull again."
        )


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
