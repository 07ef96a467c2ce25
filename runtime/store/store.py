"""The model store facade used by the CLI and the server: pull, list, get, remove.

`pull` reports progress as plain dicts (one JSON line each in `stacklet pull --json`, one event each
on the management API's streamed pull):

    {"event": "resolved", "model", "source", "repo", "revision", "commit", "files": [{"path", "role", "size"}],
     "total_bytes"}
    {"event": "file_start", "file", "size"}
    {"event": "progress", "file", "bytes", "size"}           # bytes so far for this file, resumed part included
    {"event": "restarted", "file", "discarded"}              # the hub ignored the resume: the partial starts over
    {"event": "file_done", "file", "size"}
    {"event": "verified", "file", "sha256"}
    {"event": "registered", "model", "kind", "size", "files"}

Nothing is registered until every file is in the store and verified, and a pull that fails leaves
nothing behind: what it placed in the store goes again, except what a rerun resumes after an
interruption (Ctrl-C, a stopped server, a hub out of reach): the partial download and the files done.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.config import Paths
from runtime.errors import (
    ConflictError,
    InsufficientStorageError,
    InvalidRequestError,
    ServiceUnavailableError,
    StackletError,
    StoreError,
)
from runtime.spec import KINDS
from runtime.store import fit, layout, selection
from runtime.store.ggufinfo import read_prefix
from runtime.store.hub import Cancelled, RemoteFile, RepoListing, never, raise_if_cancelled
from runtime.store.metadata import describe, gguf_metadata, text_kind
from runtime.store.registry import ModelFile, ModelRecord, Registry, check_name

Progress = Callable[[dict[str, Any]], None]
_PATH_HINTS = ("/", "./", "../", "~", ".\\")
_PROGRESS_INTERVAL_S = 0.2
# A branch, tag or commit as git allows them (refs/pr/1 included): parts that start with a letter or digit.
_REVISION = re.compile(r"[A-Za-z0-9][\w.+-]*(/[A-Za-z0-9][\w.+-]*)*", re.ASCII)
MAX_TEXT = 2048  # characters in a source, revision or file pattern
HEADER_BYTES = 2 << 20  # read of a remote GGUF's start: its dimensions come before the token lists
STALE_PARTIAL_S = 3600


@dataclass(frozen=True)
class _Fetched:
    role: str
    link: Path  # snapshot path in the store
    sha256: str


@dataclass(frozen=True)
class _Plan:
    """A hub pull resolved: where from, which files, under what name, and how its quant was chosen."""

    source: selection.Source
    hub: Any  # runtime.store.hub.Hub or runtime.store.modelscope.ModelScope
    listing: RepoListing
    name: str
    chosen: list[selection.Selected]
    remote: list[RemoteFile]
    choice: fit.Choice | None


class Store:
    def __init__(self, paths: Paths, registry: Registry | None = None) -> None:
        self.paths = paths.ensure()
        self.registry = registry or Registry(paths)

    def list(self) -> list[ModelRecord]:
        return self.registry.list()

    def get(self, name: str) -> ModelRecord:
        return self.registry.get(name)

    def pull(self, source: str, name: str | None = None, kind: str | None = None, revision: str | None = None,
             files: list[str] | None = None, token: str | None = None, progress: Progress | None = None,
             endpoint: str | None = None, hub_only: bool = False, cancelled: Cancelled = never,
             quant: str | None = None) -> ModelRecord:
        """Fetch a model from the hub (or import a local path), verify it, then register it.
        `hub_only` (the server, for a source that is not a path) never reads a local path of that name.
        `cancelled` is polled while the pull runs; once it returns True the pull stops (PullCancelledError).
        `quant` (fit, smallest or largest) says how to choose among a GGUF repo's quants when the source names
        none (default fit: the largest that fits this machine's memory)."""
        check_pull(source, kind, revision, files)
        fit.check_policy(quant)
        emit = _Emitter(progress)
        try:
            local = Path(source).expanduser()
            if not hub_only and local.exists():
                return self._import_local(local.resolve(), name, kind, files, emit, cancelled)
            if source.startswith(_PATH_HINTS) or source.lower().endswith((".gguf", ".onnx", ".safetensors")):
                raise StoreError(f"No such file or directory: {source}")
            plan = self._plan(source, name, revision, files, token, endpoint, quant)
            emit.resolved(plan)
            return self._pull_hub(plan, kind, revision, files, emit, cancelled)
        except OSError as exc:
            raise _os_error(exc) from None

    def plan(self, source: str, name: str | None = None, revision: str | None = None, files: list[str] | None = None,
             token: str | None = None, endpoint: str | None = None, quant: str | None = None) -> dict[str, Any]:
        """What `pull` would fetch from the hub, fetching nothing but the file list (and, to choose a quant, the
        first bytes of one GGUF): the `resolved` event, with the quant choice and its reason."""
        check_pull(source, None, revision, files)
        fit.check_policy(quant)
        return _resolved_event(self._plan(source, name, revision, files, token, endpoint, quant))

    def _plan(self, source: str, name: str | None, revision: str | None, patterns: list[str] | None,
              token: str | None, endpoint: str | None, policy: str | None) -> _Plan:
        from runtime.config import Settings
        from runtime.store.hub import Hub
        from runtime.store.modelscope import ModelScope

        parsed = selection.parse_repo(source, Settings.load().hub)
        hub = (ModelScope if parsed.type == "ms" else Hub)(self.paths.models, token=token, endpoint=endpoint)
        listing = hub.list_files(parsed.repo, revision)
        paths = sorted(listing.files)
        choice = None if parsed.quant or patterns else _choose_quant(hub, listing, paths, policy or "fit")
        chosen = selection.select(paths, parsed.quant or (choice.quant if choice else None), patterns)
        name = self._check_name(name or selection.default_name(parsed, chosen), {"type": parsed.type,
                                                                                  "repo": parsed.repo})
        return _Plan(parsed, hub, listing, name, chosen, [listing.files[s.path] for s in chosen], choice)

    def _pull_hub(self, plan: _Plan, kind: str | None, revision: str | None, patterns: list[str] | None,
                  emit: _Emitter, cancelled: Cancelled) -> ModelRecord:
        listing, hub = plan.listing, plan.hub
        repo = hub.repo_dir(listing.repo)
        fetched: list[_Fetched] = []
        try:
            for selected, file in zip(plan.chosen, plan.remote, strict=True):
                raise_if_cancelled(cancelled)
                emit.file_start(file.path, file.size)
                link = hub.download(listing, file, lambda n, p=file.path, s=file.size: emit.add_bytes(p, n, s),
                                    cancelled)
                emit.file_done(file.path, file.size)
                sha256 = file.sha256 or layout.sha256_of(link)
                emit.verified(file.path, sha256)
                fetched.append(_Fetched(selected.role, link, sha256))
            raise_if_cancelled(cancelled)
            source_info = {"type": plan.source.type, "repo": plan.source.repo, "revision": listing.revision,
                           "commit": listing.commit, "quant": plan.source.quant,
                           "files": patterns, "endpoint": hub.endpoint}
            described = _describe([(f.role, f.link) for f in fetched])
            record = self._register(plan.name, kind, source_info, fetched, emit, described)
        except BaseException as exc:
            resumable = isinstance(exc, (KeyboardInterrupt, ServiceUnavailableError))  # a rerun picks up the files
            self._discard(repo, [] if resumable else [f.link for f in fetched])
            raise
        with suppress(OSError):  # the ref only helps huggingface_hub's cache tools find the snapshot
            layout.write_ref(repo, listing.revision, listing.commit)
        _drop_stale_partials(repo, listing)
        return record

    def remove(self, name: str) -> tuple[ModelRecord, int]:
        """Unregister a model and free the blobs no other model uses; returns (record, bytes freed)."""
        record = self.registry.remove(name)
        still_used = [f.path for other in self.registry.list() for f in other.files]
        freed = layout.remove_files(self.paths.models, [f.path for f in record.files], still_used)
        return record, freed

    def close(self) -> None:
        self.registry.close()

    def _import_local(self, path: Path, name: str | None, kind: str | None, patterns: list[str] | None,
                      emit: _Emitter, cancelled: Cancelled) -> ModelRecord:
        root = path if path.is_dir() else path.parent
        available = _files_under(root) if path.is_dir() else _files_under(root, depth=1)
        patterns = patterns or (None if path.is_dir() else selection.local_patterns(path.name))
        chosen = selection.select(available, None, patterns)
        source = selection.Source("local", path=str(path))
        name = self._check_name(name or selection.default_name(source, chosen), {"type": "local", "path": str(path)})
        sizes = [(root / s.path).stat().st_size for s in chosen]
        emit.send(_event("local", name, chosen, sizes, path=str(path)))
        hashed = []
        for selected, size in zip(chosen, sizes, strict=True):
            raise_if_cancelled(cancelled)
            emit.file_start(selected.path, size)
            sha256 = layout.sha256_of(root / selected.path)
            emit.add_bytes(selected.path, size, size)
            emit.file_done(selected.path, size)
            emit.verified(selected.path, sha256)
            hashed.append((selected, sha256))
        raise_if_cancelled(cancelled)
        described = _describe([(s.role, root / s.path) for s, _ in hashed])  # before anything is placed
        repo = layout.repo_dir(self.paths.models, layout.local_repo(root.name))
        commit = layout.local_commit(f"{s.path}:{h}" for s, h in hashed)
        placed: list[Path] = []
        try:
            fetched = []
            for selected, sha256 in hashed:
                blob = layout.import_file(repo, root / selected.path, sha256)
                placed.append(blob)
                link = layout.link_snapshot(repo, commit, selected.path, blob)
                placed.append(link)
                fetched.append(_Fetched(selected.role, link, sha256))
            source_info = {"type": "local", "path": str(path), "commit": commit}
            return self._register(name, kind, source_info, fetched, emit, described)
        except BaseException:
            self._discard(repo, placed)
            raise

    def _check_name(self, name: str, identity: dict[str, str]) -> str:
        """Fail before any download when the name is taken by a different model (same source = refresh)."""
        check_name(name)
        existing = self.registry.find(name)
        if existing and any(existing.source.get(k) != v for k, v in identity.items()):
            raise ConflictError(
                f"A model named '{name}' already exists. Choose another with --name or remove it first."
            )
        return name

    def _discard(self, repo: Path, placed: list[Path]) -> None:
        still_used = [f.path for other in self.registry.list() for f in other.files]
        layout.discard(self.paths.models, repo, placed, still_used)

    def _register(self, name: str, kind: str | None, source: dict[str, Any], fetched: list[_Fetched],
                  emit: _Emitter, described: tuple[str, dict[str, Any]]) -> ModelRecord:
        detected, metadata = described
        record = ModelRecord(
            name=name,
            kind=kind or detected,
            source=source,
            files=[ModelFile(f.role, str(f.link.relative_to(self.paths.models)), f.link.stat().st_size, f.sha256)
                   for f in fetched],
            metadata=metadata,
        )
        previous = self.registry.find(name)
        if previous:
            record.options, record.keep_alive = previous.options, previous.keep_alive
        self.registry.add(record, replace=previous is not None)
        if previous:
            still_used = [f.path for other in self.registry.list() for f in other.files]
            layout.remove_files(self.paths.models, [f.path for f in previous.files], still_used)
        emit.registered(record)
        return record


def check_pull(source: str, kind: str | None = None, revision: str | None = None,
               files: list[str] | None = None) -> None:
    """Refuse a pull that can never succeed before anything is fetched (the API answers 400)."""
    if not source.strip():
        raise InvalidRequestError("The source is empty: give owner/repo[:QUANT] or a file path.", param="source")
    _check_text(source, "source")
    if kind is not None and kind not in KINDS:
        raise InvalidRequestError(f"Unknown kind {kind[:64]!r}. Use one of: {', '.join(KINDS)}.", param="kind")
    if revision is not None and (not _REVISION.fullmatch(revision) or ".." in revision or len(revision) > 255):
        raise InvalidRequestError(
            f"Invalid revision {revision[:64]!r}: give a branch, tag or commit of the repo (letters, digits and "
            ". _ + - in parts separated by /, without '..').",
            param="revision",
        )
    for i, pattern in enumerate(files or []):
        if not pattern:
            raise InvalidRequestError("A file pattern is empty: give a file name or glob.", param=f"files[{i}]")
        _check_text(pattern, f"files[{i}]")


def _check_text(value: str, param: str) -> None:
    if len(value) > MAX_TEXT or layout.UNSAFE_CHARS.search(value):
        raise InvalidRequestError(
            f"Invalid {param} {value[:64]!r}: at most {MAX_TEXT} characters, without control characters or lone "
            "surrogates.",
            param=param,
        )


def _event(source: str, name: str, chosen: list[selection.Selected], sizes: list[int], **where: Any) -> dict[str, Any]:
    files = [{"path": s.path, "role": s.role, "size": size} for s, size in zip(chosen, sizes, strict=True)]
    return {"event": "resolved", "model": name, "source": source, **where, "files": files, "total_bytes": sum(sizes)}


def _resolved_event(plan: _Plan) -> dict[str, Any]:
    event = _event(plan.source.type, plan.name, plan.chosen, [f.size for f in plan.remote], repo=plan.source.repo,
                   revision=plan.listing.revision, commit=plan.listing.commit)
    if plan.choice is not None:
        event["choice"] = plan.choice.as_dict()
    return event


def _choose_quant(hub: Any, listing: RepoListing, paths: list[str], policy: str) -> fit.Choice | None:
    """Which of a GGUF repo's quants to pull (None when there is nothing to choose from)."""
    groups = {quant: group for quant, group in selection.quant_groups(paths).items() if quant}
    if len(groups) < 2:
        return None
    sizes = {quant: sum(listing.files[p].size for p in group) for quant, group in groups.items()}
    first = listing.files[groups[min(sizes, key=lambda q: sizes[q])][0]]
    metadata = _remote_metadata(hub, listing, first)
    return fit.choose(sizes, policy, text_kind(metadata), metadata, fit.this_machine())


def _remote_metadata(hub: Any, listing: RepoListing, file: RemoteFile) -> dict[str, Any]:
    """A GGUF's dimensions from its first bytes; {} when they cannot be read (the estimate then guesses)."""
    try:
        header = read_prefix(hub.read_start(listing, file, HEADER_BYTES))
    except StackletError:
        return {}
    return gguf_metadata(header, Path(file.path)) if header.values else {}


def _drop_stale_partials(repo: Path, listing: RepoListing) -> None:
    """Partial downloads of file versions the repo no longer lists can never complete: once a pull of the repo
    succeeds, those left untouched for STALE_PARTIAL_S go (a younger one may be another pull's, still
    writing)."""
    current = {name for f in listing.files.values() for name in (f.sha256, f.blob_id) if name}
    for partial in (repo / "blobs").glob("*.incomplete"):
        with suppress(OSError):
            if partial.name.removesuffix(".incomplete") not in current and \
                    time.time() - partial.stat().st_mtime > STALE_PARTIAL_S:
                partial.unlink()


def _describe(files: list[tuple[str, Path]]) -> tuple[str, dict[str, Any]]:
    by_role: dict[str, list[Path]] = {}
    for role, path in files:
        by_role.setdefault(role, []).append(path)
    return describe(by_role)


def _os_error(exc: OSError) -> StoreError:
    if layout.disk_full(exc):
        return InsufficientStorageError("The disk is full: the model did not fit in the store. Free some space, "
                                        "then pull again.")
    where = f": {exc.filename}" if exc.filename else ""
    return StoreError(f"{exc.strerror or type(exc).__name__}{where}.")


def _files_under(root: Path, depth: int | None = None) -> list[str]:
    found = []
    for path in sorted(root.rglob("*") if depth is None else root.iterdir()):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            found.append(relative.as_posix())
    return found


class _Emitter:
    """Turns store steps into progress events; byte counts are throttled to a few per second."""

    def __init__(self, callback: Progress | None) -> None:
        self.callback = callback
        self.done: dict[str, int] = {}
        self.last_sent = 0.0

    def _send(self, event: str, **fields: Any) -> None:
        if self.callback is not None:
            self.callback({"event": event, **fields})

    def send(self, event: dict[str, Any]) -> None:
        if self.callback is not None:
            self.callback(event)

    def resolved(self, plan: _Plan) -> None:
        self.send(_resolved_event(plan))

    def file_start(self, path: str, size: int) -> None:
        self.done[path] = 0
        self._send("file_start", file=path, size=size)

    def add_bytes(self, path: str, count: int, size: int) -> None:
        if count < 0:  # the hub would not resume the partial download: it starts over
            self._send("restarted", file=path, discarded=-count)
        self.done[path] = self.done.get(path, 0) + count
        now = time.monotonic()
        if now - self.last_sent >= _PROGRESS_INTERVAL_S or self.done[path] >= size:
            self.last_sent = now
            self._send("progress", file=path, bytes=self.done[path], size=size)

    def file_done(self, path: str, size: int) -> None:
        self._send("file_done", file=path, size=size)

    def verified(self, path: str, sha256: str) -> None:
        self._send("verified", file=path, sha256=sha256)

    def registered(self, record: ModelRecord) -> None:
        self._send("registered", model=record.name, kind=record.kind, size=record.size, files=len(record.files))
