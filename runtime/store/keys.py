"""API keys: shown once, stored as sha256 hashes in the shared SQLite database.

A key has a scope: an inference key serves the OpenAI routes (and reads the model list), an admin
key also manages models (pull, delete, load, unload, configure). The CLI's own calls use an admin key
that lives in a 0600 file in the data dir, so users never type a key for local work.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from contextlib import AbstractContextManager, suppress
from dataclasses import asdict, dataclass
from typing import Any

from runtime.config import Paths
from runtime.errors import ConflictError, InvalidRequestError, NotFoundError
from runtime.store.registry import connect, database_full, storage_errors, transaction

KEY_PREFIX = "sk-stacklet-"
DISPLAY_LENGTH = len(KEY_PREFIX) + 4  # what `keys list` shows and what lookups index on
ADMIN_NAME = "admin"
ADMIN_FILE = "admin.key"
LAST_USED_RESOLUTION = 60  # seconds; avoids a database write on every request
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
INFERENCE = "inference"
ADMIN = "admin"
SCOPES = (INFERENCE, ADMIN)
OPEN_PREFIX = "open-"  # the short-lived keys `stacklet open` hands the playground

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_used INTEGER,
    expires INTEGER,
    scope TEXT NOT NULL DEFAULT 'admin'
);
CREATE INDEX IF NOT EXISTS keys_prefix ON keys (prefix);
"""
# Keys made before scopes existed could do everything: they stay admin keys, so no script breaks.
_SCOPE_COLUMN = "ALTER TABLE keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin'"
COLUMNS = "name, prefix, created, last_used, expires, scope"


@dataclass
class ApiKey:
    name: str
    prefix: str
    created: int
    last_used: int | None = None
    expires: int | None = None
    scope: str = INFERENCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, paths: Paths) -> None:
        self._conn = connect(paths.database)
        self._conn.executescript(_SCHEMA)
        if not self._has_scopes():
            with self.transaction():  # the CLI and the server may both open an older database at once
                if not self._has_scopes():
                    self._conn.execute(_SCOPE_COLUMN)

    def _has_scopes(self) -> bool:
        return "scope" in {row[1] for row in self._conn.execute("PRAGMA table_info(keys)")}

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn)

    def create(self, name: str | None = None, expires_days: float | None = None,
               scope: str = INFERENCE) -> tuple[str, ApiKey]:
        """A new key; the plain key is returned here and never again."""
        name = name or f"key-{secrets.token_hex(3)}"
        if not _NAME.match(name):
            raise InvalidRequestError(
                f"Invalid key name '{name}': use up to 64 letters, digits, '.', '_' or '-'.", param="name"
            )
        if expires_days is not None and expires_days <= 0:
            raise InvalidRequestError("--expires must be a positive number of days.", param="expires")
        if scope not in SCOPES:
            raise InvalidRequestError(f"Unknown key scope '{scope}': use {' or '.join(SCOPES)}.", param="scope")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = int(time.time())
        expires = now + int(expires_days * 86400) if expires_days is not None else None
        record = ApiKey(name, key[:DISPLAY_LENGTH], now, None, expires, scope)
        try:
            with storage_errors():
                self._conn.execute(
                    f"INSERT INTO keys (hash, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (_digest(key), name, record.prefix, now, None, expires, scope),
                )
        except sqlite3.IntegrityError:
            raise ConflictError(f"A key named '{name}' already exists. Choose another --name.") from None
        return key, record

    def purge_expired(self, prefix: str) -> int:
        """Delete the expired keys whose names start with `prefix` (they can never work again)."""
        return self._conn.execute("DELETE FROM keys WHERE substr(name, 1, ?) = ? AND expires <= ?",
                                  (len(prefix), prefix, int(time.time()))).rowcount

    def list(self) -> list[ApiKey]:
        rows = self._conn.execute(f"SELECT {COLUMNS} FROM keys ORDER BY created, name").fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, name: str) -> None:
        with storage_errors():
            deleted = self._conn.execute("DELETE FROM keys WHERE name = ?", (name,)).rowcount
        if deleted == 0:
            raise NotFoundError(f"No key named '{name}'. See `stacklet keys list`.", code="key_not_found")

    def verify(self, key: str) -> ApiKey | None:
        """The key's record if `key` is valid and unexpired, else None."""
        digest = _digest(key)
        rows = self._conn.execute(
            f"SELECT {COLUMNS}, hash FROM keys WHERE prefix = ?",
            (key[:DISPLAY_LENGTH],),
        ).fetchall()
        now = int(time.time())
        for *fields, stored in rows:
            if hmac.compare_digest(stored, digest):
                record = ApiKey(*fields)
                if record.expires is not None and record.expires <= now:
                    return None
                self._touch(record, now)
                return record
        return None

    def _touch(self, record: ApiKey, now: int) -> None:
        """Best effort: on a full disk the key still works, its last use is not recorded."""
        if record.last_used is None or now - record.last_used >= LAST_USED_RESOLUTION:
            try:
                self._conn.execute("UPDATE keys SET last_used = ? WHERE name = ?", (now, record.name))
            except sqlite3.OperationalError as exc:
                if not database_full(exc):
                    raise
                return
            record.last_used = now

    def close(self) -> None:
        self._conn.close()


def admin_key(paths: Paths) -> str:
    """The CLI's own key: read from the data dir, (re)created there when missing or revoked."""
    path = paths.data / ADMIN_FILE
    store = KeyStore(paths)
    try:
        with store.transaction():  # serialises the CLI and the server creating it at once
            key = path.read_text().strip() if path.is_file() else ""
            record = store.verify(key) if key else None
            if record is not None and record.scope == ADMIN:
                return key
            with suppress(NotFoundError):
                store.revoke(ADMIN_NAME)
            key, _ = store.create(ADMIN_NAME, scope=ADMIN)
            _write_private(path, key)
            return key
    finally:
        store.close()


def _write_private(path: os.PathLike[str], text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text + "\n")


def short_lived_key(paths: Paths, ttl_s: int) -> str:
    """A new admin key that stops working after `ttl_s` seconds, for a link that opens the playground
    signed in; the expired ones made before go, so they never pile up in `keys list`."""
    store = KeyStore(paths)
    try:
        store.purge_expired(OPEN_PREFIX)
        key, _ = store.create(f"{OPEN_PREFIX}{secrets.token_hex(4)}", ttl_s / 86400, ADMIN)
        return key
    finally:
        store.close()
