"""The only importer of huggingface_hub: list a repo's files and download blobs into the HF cache layout.

Downloads go to `blobs/<etag>.incomplete`, a fixed name that survives Ctrl-C so the next pull resumes
with a Range request (huggingface_hub's own `hf_hub_download` deletes its partial files on failure).
A blob is renamed into place only after its checksum matched the hub's metadata, so a corrupt
download never enters the cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runtime.errors import (
    ChecksumMismatchError,
    FileNotInRepoError,
    GatedRepoError,
    HubUnreachableError,
    RepoNotFoundError,
    StoreError,
)
from runtime.store import layout

DEFAULT_ENDPOINT = "https://huggingface.co"


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
            info = HfApi(endpoint=self.endpoint).model_info(
                repo, revision=revision, files_metadata=True, token=self.token
            )
        files = {
            s.rfilename: RemoteFile(s.rfilename, s.lfs.size if s.lfs else s.size or 0,
                                    s.lfs.sha256 if s.lfs else None, s.blob_id)
            for s in info.siblings or []
        }
        return RepoListing(repo, revision, info.sha or revision, files)

    def download(self, listing: RepoListing, file: RemoteFile, on_bytes: Callable[[int], None]) -> Path:
        """Fetch one file into the cache (resuming a partial) and return its snapshot path."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.file_download import get_hf_file_metadata, http_get
        from huggingface_hub.utils import WeakFileLock, build_hf_headers

        repo_dir = layout.repo_dir(self.models_dir, listing.repo)
        url = hf_hub_url(listing.repo, file.path, revision=listing.commit, endpoint=self.endpoint)
        with self._errors(listing.repo, listing.revision, file.path):
            meta = get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint)
        etag = meta.etag or file.sha256 or file.blob_id
        if not etag:
            raise StoreError(f"The hub sent no ETag for {file.path}; cannot cache it safely.")
        blob = repo_dir / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(str(self.models_dir / ".locks" / repo_dir.name / f"{etag}.lock")):
            if not blob.exists():
                partial = blob.with_name(etag + ".incomplete")
                # The token goes to the hub only, never to the CDN a large file redirects to.
                same_host = urlsplit(meta.location).netloc == urlsplit(url).netloc
                headers = build_hf_headers(token=self.token if same_host else False)
                with self._errors(listing.repo, listing.revision, file.path), partial.open("ab") as out:
                    if out.tell() > file.size:  # a stale partial of a different file version
                        out.truncate(0)
                    resume = out.tell()
                    if resume:
                        on_bytes(resume)
                    http_get(meta.location, out, resume_size=resume, headers=headers,
                             expected_size=meta.size or file.size,
                             tqdm_class=functools.partial(_ByteCounter, on_bytes))  # type: ignore[arg-type]
                _verify(partial, file)
                partial.replace(blob)
        link = layout.link_snapshot(repo_dir, listing.commit, file.path, blob)
        layout.write_ref(repo_dir, listing.revision, listing.commit)
        return link

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
                "to a mirror, or import a local file with `stacklet pull PATH`.",
                retry_after=30,
            ) from None
        except OSError as exc:  # disk full, or a size check failing after the retries
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(f"Download of {path or repo} failed: {first_line}. Pull again to resume.") from None


def _http_error(exc: Any, repo: str, endpoint: str) -> Exception:
    status = exc.response.status_code if exc.response is not None else 0
    if status in (401, 403):
        return GatedRepoError(f"Access to {repo} denied (HTTP {status}): set HF_TOKEN or pass --token.")
    if status >= 500 or status == 429:
        return HubUnreachableError(f"{endpoint} answered HTTP {status}; try again later.", retry_after=30)
    return StoreError(f"{endpoint} answered HTTP {status} for {repo}.")


class _ByteCounter:
    """Stands in for tqdm inside huggingface_hub's http_get: forwards byte counts to a callback."""

    def __init__(self, on_bytes: Callable[[int], None], **_: Any) -> None:
        self.on_bytes = on_bytes

    def __enter__(self) -> _ByteCounter:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def update(self, count: int) -> None:
        self.on_bytes(count)


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
