"""The Hugging Face cache layout on disk: `models--owner--name/{blobs,snapshots/<commit>,refs}`.

Local imports use the same layout (repo `local/<name>`, blobs named by sha256) so removal and
dedupe work the same way for every model, and huggingface_hub's cache tools can read the store.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from runtime.errors import StoreError

LOCAL_OWNER = "local"
COMMIT = re.compile(r"[0-9a-f]{40}")  # a git commit or blob sha1
SHA256 = re.compile(r"[0-9a-f]{64}")
UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")  # control characters and lone surrogates
_MAX_NAME = 1024


def repo_dir(models_dir: Path, repo: str) -> Path:
    return models_dir / ("models--" + repo.replace("/", "--"))


def local_repo(folder_name: str) -> str:
    """The pseudo-repo of a local import: one per source folder, so files imported twice share blobs."""
    return f"{LOCAL_OWNER}/" + (re.sub(r"[^\w.-]", "-", folder_name) or "root")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_relative_name(path: object) -> bool:
    """Whether `path` is a plain relative POSIX path: what a repo file or a ref may be called in the store.
    No absolute paths, no `.` or `..` parts, no empty parts, no backslashes, no control characters."""
    if not isinstance(path, str) or not 0 < len(path) <= _MAX_NAME or "\\" in path or UNSAFE_CHARS.search(path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _checked(commit: str, path: str) -> None:
    """The last guard before a write: names from outside (the hub, a client) never reach the disk unchecked."""
    if not COMMIT.fullmatch(commit) or not is_relative_name(path):
        raise StoreError(f"Refusing to write {path[:80]!r} at commit {commit[:80]!r}: the name leaves the store.")


def blob_path(repo: Path, name: str) -> Path:
    """`blobs/<name>` for a content hash (git sha1 or sha256), its folder created."""
    if not (COMMIT.fullmatch(name) or SHA256.fullmatch(name)):
        raise StoreError(f"Refusing the blob name {name[:80]!r}: blobs are named by their hash.")
    blob = repo / "blobs" / name
    blob.parent.mkdir(parents=True, exist_ok=True)
    return blob


def link_snapshot(repo: Path, commit: str, path: str, blob: Path) -> Path:
    """Point `snapshots/<commit>/<path>` at the blob with a relative symlink (as huggingface_hub does)."""
    _checked(commit, path)
    link = repo / "snapshots" / commit / path
    link.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(blob, link.parent)
    if link.is_symlink() or link.exists():
        if os.readlink(link) == target:
            return link
        link.unlink()
    link.symlink_to(target)
    return link


def write_ref(repo: Path, revision: str, commit: str) -> None:
    if revision == commit:
        return
    _checked(commit, revision)
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)


def import_file(repo: Path, source: Path, sha256: str) -> Path:
    """Place a local file into `blobs/<sha256>`: a hard link on the same filesystem, else an atomic copy."""
    blob = blob_path(repo, sha256)
    if blob.exists():
        return blob
    partial = blob.with_name(sha256 + ".incomplete")
    partial.unlink(missing_ok=True)
    try:
        try:
            os.link(source, partial)
        except OSError:
            shutil.copyfile(source, partial)
        partial.replace(blob)
    except BaseException:  # a half-written copy is never resumed: it goes
        partial.unlink(missing_ok=True)
        raise
    return blob


def disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def local_commit(hashes: Iterable[str]) -> str:
    """A stable 40-hex pseudo commit for an imported file set."""
    return hashlib.sha1("\n".join(sorted(hashes)).encode()).hexdigest()


def remove_files(models_dir: Path, removed: Iterable[str], still_used: Iterable[str]) -> int:
    """Delete the snapshot links of a removed model and the blobs no remaining model points at.

    Returns the bytes freed. Paths are relative to `models_dir` (as in the registry).
    """
    keep_links = {models_dir / p for p in still_used}
    keep_blobs = {p.resolve() for p in keep_links if p.exists()}
    freed = 0
    for rel in removed:
        if Path(rel).is_absolute():  # registered in place (fake models, tests): never ours to delete
            continue
        link = models_dir / rel
        if link in keep_links or not (link.is_symlink() or link.exists()):
            continue
        blob = link.resolve()
        link.unlink()
        if blob not in keep_blobs and blob.is_file() and _inside(blob, models_dir):
            stat = blob.stat()
            freed += stat.st_size if stat.st_nlink == 1 else 0  # a hard-linked import frees nothing
            blob.unlink()
        _prune_empty(link.parent, models_dir)
    return freed


def discard(models_dir: Path, repo: Path, placed: Iterable[Path], still_used: Iterable[str]) -> None:
    """Undo a failed pull or import into `repo`: delete the snapshot links and blobs it placed that no
    registered model uses (`still_used`, relative to `models_dir`), then the folders that leaves empty.
    A resumable partial download stays."""
    used = {models_dir / p for p in still_used}
    used_blobs = {p.resolve() for p in used if p.exists()}
    for path in placed:
        target = path.resolve()
        if path.is_symlink() and path not in used:
            path.unlink()
        if target.is_file() and target not in used_blobs and _inside(target, models_dir):
            target.unlink()
    _prune_repo(repo)


def _prune_repo(repo: Path) -> None:
    snapshots = repo / "snapshots"
    for folder, _, _ in sorted(os.walk(snapshots), key=lambda entry: -len(entry[0])):
        if not any(Path(folder).iterdir()):
            Path(folder).rmdir()
    blobs = repo / "blobs"
    partials = blobs.is_dir() and any(b.name.endswith(".incomplete") for b in blobs.iterdir())
    if repo.is_dir() and not snapshots.exists() and not partials:
        shutil.rmtree(repo)  # its refs and any blob no snapshot links to


def _inside(path: Path, root: Path) -> bool:
    return path.is_relative_to(root.resolve())


def _prune_empty(folder: Path, models_dir: Path) -> None:
    """Drop emptied snapshot folders; a repo left with no snapshots and no partial downloads goes entirely."""
    while folder.name != "snapshots" and folder != models_dir and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
    if folder.name != "snapshots" or any(folder.iterdir()):
        return
    repo = folder.parent
    blobs = repo / "blobs"
    if not (blobs.is_dir() and any(b.name.endswith(".incomplete") for b in blobs.iterdir())):
        shutil.rmtree(repo)
