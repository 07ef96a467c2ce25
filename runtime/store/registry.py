"""The model registry: one SQLite database (WAL) shared by the CLI and a running server."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from runtime.config import Paths, private_dir, private_file
from runtime.errors import ConflictError, InsufficientStorageError, InvalidRequestError, ModelNotFoundError
from runtime.options import EngineOptions, check_context_size, parse_keep_alive
from runtime.spec import KINDS, ModelSpec

# Names travel in URL paths (/v1/models/NAME/load) that clients normalise: no '/', no '..', ASCII only.
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)


def check_name(name: str) -> str:
    """`name` when it can name a model, else InvalidRequestError with the allowed pattern."""
    if not _MODEL_NAME.fullmatch(name) or ".." in name:
        raise InvalidRequestError(
            f"Invalid model name {name[:64]!r}: use 1 to 128 ASCII letters, digits and . _ - : +, starting with "
            f"a letter or digit, without '..' (pattern {MODEL_NAME_PATTERN}). Choose one with --name.",
            param="name",
        )
    return name


@dataclass
class ModelFile:
    role: str  # "model", "shard", "mmproj", "vae", "taesd", "config", ...
    path: str  # relative to Paths.models (the HF cache "hub" dir), e.g. models--o--r/snapshots/<sha>/f
    size: int
    sha256: str | None = None


@dataclass
class ModelRecord:
    name: str
    kind: str
    source: dict[str, Any]  # {"type": "hf"|"local"|"fake", "repo", "revision", "commit", "path"}
    files: list[ModelFile] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    options: EngineOptions = field(default_factory=EngineOptions)
    keep_alive: float | None = None  # seconds idle before unloading (negative = forever); None = serve's
    engine: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        self.engine = self.engine or KINDS[self.kind].engine
        self.created = self.created or int(time.time())

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def spec(self, paths: Paths) -> ModelSpec:
        """What a worker loads, with the options stored with the model (the scheduler layers the rest)."""
        files: dict[str, Path] = {}
        for f in self.files:
            files.setdefault(f.role, paths.models / f.path)
        return ModelSpec(self.name, self.kind, self.engine, files, dict(self.metadata), self.options)

    def configure(self, patch: dict[str, Any]) -> None:
        """Apply a merge patch of engine options and keep_alive: a value sets a field, None clears it."""
        patch = {name.replace("-", "_"): value for name, value in patch.items()}
        keep_alive = patch.pop("keep_alive", self.keep_alive)
        keep_alive = None if keep_alive is None else parse_keep_alive(keep_alive)
        changes = EngineOptions.from_dict(patch)  # validates every name, including the ones being cleared
        cleared = {name: None for name, value in patch.items() if value is None}
        options = replace(self.options.merge(changes), **cleared)
        check_context_size(options, self.metadata.get("context_length"))
        self.options = options
        self.keep_alive = keep_alive

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"] = self.options.as_dict()
        data["size"] = self.size
        return data


_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    engine TEXT NOT NULL,
    source TEXT NOT NULL,
    files TEXT NOT NULL,
    metadata TEXT NOT NULL,
    options TEXT NOT NULL,
    keep_alive REAL,
    created INTEGER NOT NULL
);
"""


COLUMNS = "name, kind, engine, source, files, metadata, options, keep_alive, created"
ADDED_COLUMNS = {"keep_alive": "REAL"}  # columns newer than the first schema, for older databases


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a database from an older stacklet up to date; its models stay as they were."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(models)")}
    for name, sql_type in ADDED_COLUMNS.items():
        if name not in present:
            conn.execute(f"ALTER TABLE models ADD COLUMN {name} {sql_type}")


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the shared database: WAL so readers never block the writer; private to its owner
    (SQLite gives its -wal and -shm files the database file's mode)."""
    private_dir(path.parent)
    private_file(path)
    for companion in ("-wal", "-shm"):  # an older install's, made before the database was private
        with suppress(FileNotFoundError):
            path.with_name(path.name + companion).chmod(0o600)
    conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; a full disk is InsufficientStorageError."""
    with storage_errors():
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite has rolled back already after some errors (a full disk)
                conn.execute("ROLLBACK")
            raise


@contextmanager
def storage_errors() -> Iterator[None]:
    """SQLite's full disk becomes InsufficientStorageError (`transaction` writes inside one)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if database_full(exc):
            raise InsufficientStorageError(
                "The disk is full: the database could not be written, nothing was changed. Free some space, "
                "then try again."
            ) from None
        raise


def database_full(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "database or disk is full" in str(exc)


class Registry:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._conn = connect(paths.database)
        self._conn.executescript(_SCHEMA)
        _add_missing_columns(self._conn)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn)

    def list(self) -> list[ModelRecord]:
        rows = self._conn.execute(f"SELECT {COLUMNS} FROM models ORDER BY name").fetchall()
        return [_record(row) for row in rows]

    def find(self, name: str) -> ModelRecord | None:
        row = self._conn.execute(f"SELECT {COLUMNS} FROM models WHERE name = ?", (name,)).fetchone()
        return _record(row) if row else None

    def get(self, name: str) -> ModelRecord:
        record = self.find(name)
        if record is None:
            raise ModelNotFoundError(name)
        return record

    def add(self, record: ModelRecord, *, replace: bool = False) -> None:
        check_name(record.name)
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        try:
            with self._transaction() as conn:
                conn.execute(f"{verb} INTO models ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _row(record))
        except sqlite3.IntegrityError:
            raise ConflictError(
                f"A model named '{record.name}' already exists. Choose another with --name or remove it first."
            ) from None

    def configure(self, name: str, patch: dict[str, Any]) -> ModelRecord:
        """Store engine options and keep_alive with a model (see `ModelRecord.configure`)."""
        with self._transaction() as conn:
            record = self.get(name)
            record.configure(patch)
            conn.execute("UPDATE models SET options = ?, keep_alive = ? WHERE name = ?",
                         (json.dumps(record.options.as_dict()), record.keep_alive, record.name))
        return record

    def remove(self, name: str) -> ModelRecord:
        with self._transaction() as conn:
            record = self.get(name)
            conn.execute("DELETE FROM models WHERE name = ?", (name,))
        return record

    def close(self) -> None:
        self._conn.close()


def _row(record: ModelRecord) -> tuple[Any, ...]:
    return (
        record.name,
        record.kind,
        record.engine,
        json.dumps(record.source),
        json.dumps([asdict(f) for f in record.files]),
        json.dumps(record.metadata),
        json.dumps(record.options.as_dict()),
        record.keep_alive,
        record.created,
    )


def _record(row: tuple[Any, ...]) -> ModelRecord:
    name, kind, engine, source, files, metadata, options, keep_alive, created = row
    return ModelRecord(
        name=name,
        kind=kind,
        engine=engine,
        source=json.loads(source),
        files=[ModelFile(**f) for f in json.loads(files)],
        metadata=json.loads(metadata),
        options=EngineOptions.from_stored(json.loads(options)),
        keep_alive=keep_alive,
        created=created,
    )
