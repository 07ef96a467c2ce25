"""Routes and remotes, in the shared SQLite database.

A route is a public model name resolving to weighted targets plus an ordered fallback list; a target is
a local model (`smol`) or a model on a remote upstream (`node-a:qwen`). A remote is an OpenAI-compatible
server (another stacklet node, vLLM, llama-server, ...). Its API key lives in a 0600 file in the data
dir, never in the database and never shown back.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runtime.config import Paths, private_dir
from runtime.errors import ConflictError, InvalidRequestError, NotFoundError
from runtime.options import TOKEN_ID_VOCABULARIES
from runtime.store.registry import check_name, connect, transaction

_REMOTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # no ':' so `remote:model` splits at the first
_ROUTE_COLUMNS = "name, targets, fallbacks, token_ids, created"
MAX_TARGETS = 16
MAX_WEIGHT = 1000
MAX_KEY_BYTES = 8192
DEFAULT_TIMEOUT_S = 300.0  # until an upstream's first byte (a long non-streamed generation is one wait)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS routes (
    name TEXT PRIMARY KEY,
    targets TEXT NOT NULL,
    fallbacks TEXT NOT NULL,
    token_ids TEXT,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS remotes (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    models TEXT,
    timeout REAL NOT NULL,
    created INTEGER NOT NULL
);
"""


@dataclass
class Target:
    target: str  # "model" or "remote:model"
    weight: int = 1


@dataclass
class Route:
    name: str
    targets: list[Target]
    fallbacks: list[str] = field(default_factory=list)
    token_ids: str | None = None  # how /embeddings reads integer inputs (protocol/openai_ids.py); None: by name
    created: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Remote:
    name: str
    url: str  # the OpenAI base URL, e.g. http://10.0.0.2:8000/v1
    models: list[str] | None = None  # listed by hand; None = discovered from the upstream's /models
    timeout: float = DEFAULT_TIMEOUT_S
    created: int = 0
    has_key: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_target(target: str) -> tuple[str | None, str]:
    """("node-a", "qwen") for "node-a:qwen"; (None, target) when the part before ':' could not name a remote."""
    remote, sep, model = target.partition(":")
    if sep and model and _REMOTE_NAME.fullmatch(remote):
        return remote, model
    return None, target


def check_remote_name(name: str) -> str:
    if not _REMOTE_NAME.fullmatch(name):
        raise InvalidRequestError(f"Invalid remote name {name[:64]!r}: use up to 64 letters, digits, '.', '_' or "
                                  "'-', starting with a letter or digit.", param="name")
    return name


def base_url(url: str) -> str:
    """The OpenAI base URL of `url`: http(s) only; a bare host gets /v1."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InvalidRequestError(f"Invalid remote URL {url[:200]!r}: use http(s)://host:port[/v1].", param="url")
    if parts.username or parts.password:
        raise InvalidRequestError("Put the remote's key in --api-key-env or --api-key-file, not in its URL.",
                                  param="url")
    path = parts.path.rstrip("/") or "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


class RouteStore:
    def __init__(self, paths: Paths) -> None:
        self._conn = connect(paths.database)
        self._conn.executescript(_SCHEMA)
        self._key_dir = paths.data / "remote-keys"

    # Routes

    def routes(self) -> list[Route]:
        rows = self._conn.execute(f"SELECT {_ROUTE_COLUMNS} FROM routes ORDER BY name").fetchall()
        return [_route(row) for row in rows]

    def route(self, name: str) -> Route | None:
        row = self._conn.execute(f"SELECT {_ROUTE_COLUMNS} FROM routes WHERE name = ?",
                                 (name,)).fetchone()
        return _route(row) if row else None

    def set_route(self, route: Route) -> Route:
        """Create or replace a route; its targets must name local models or registered remotes."""
        check_name(route.name)
        if not route.targets:
            raise InvalidRequestError("A route needs at least one target, e.g. `stacklet route set gpt-4o smol`.",
                                      param="targets")
        if route.token_ids not in (None, *TOKEN_ID_VOCABULARIES):
            raise InvalidRequestError(f"Invalid value '{route.token_ids[:40]}' for 'token_ids': use "
                                      f"{' or '.join(TOKEN_ID_VOCABULARIES)}.", param="token_ids")
        if len(route.targets) + len(route.fallbacks) > MAX_TARGETS:
            raise InvalidRequestError(f"A route has at most {MAX_TARGETS} targets and fallbacks.", param="targets")
        with transaction(self._conn) as conn:
            if _is_model(conn, route.name):
                raise ConflictError(f"'{route.name}' is a local model. Choose another route name.")
            for target in [t.target for t in route.targets] + route.fallbacks:
                self._check_target(conn, target, route.name)
            for target in route.targets:
                if not 1 <= target.weight <= MAX_WEIGHT:
                    raise InvalidRequestError(f"Weights are whole numbers from 1 to {MAX_WEIGHT}.", param="weight")
            route.created = route.created or int(time.time())
            conn.execute(f"INSERT OR REPLACE INTO routes ({_ROUTE_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                         (route.name, json.dumps([asdict(t) for t in route.targets]), json.dumps(route.fallbacks),
                          route.token_ids, route.created))
        return route

    def _check_target(self, conn: sqlite3.Connection, target: str, route: str) -> None:
        if target == route:
            raise InvalidRequestError(f"The route '{route}' cannot target itself.", param="targets")
        remote, _ = split_target(target)
        if remote is not None and conn.execute("SELECT 1 FROM remotes WHERE name = ?", (remote,)).fetchone():
            return
        if _is_model(conn, target):
            return
        raise NotFoundError(f"No local model or remote for target '{target[:200]}'. Use a name from `stacklet "
                            "list`, or `remote:model` after `stacklet remote add`.", code="model_not_found")

    def remove_route(self, name: str) -> None:
        if self._conn.execute("DELETE FROM routes WHERE name = ?", (name,)).rowcount == 0:
            raise NotFoundError(f"No route named '{name[:200]}'. See `stacklet route list`.", code="route_not_found")

    # Remotes

    def remotes(self) -> list[Remote]:
        rows = self._conn.execute("SELECT name, url, models, timeout, created FROM remotes ORDER BY name").fetchall()
        return [self._remote(row) for row in rows]

    def add_remote(self, remote: Remote, key: str | None) -> Remote:
        check_remote_name(remote.name)
        key = None if key is None else _check_key(key)
        remote.url = base_url(remote.url)
        if not 0 < remote.timeout <= 3600:
            raise InvalidRequestError("--timeout is seconds from 0 to 3600.", param="timeout")
        for model in remote.models or []:
            check_name(model)
        remote.created = int(time.time())
        models = None if remote.models is None else json.dumps(remote.models)
        try:
            with transaction(self._conn) as conn:
                conn.execute("INSERT INTO remotes (name, url, models, timeout, created) VALUES (?, ?, ?, ?, ?)",
                             (remote.name, remote.url, models, remote.timeout, remote.created))
                self._write_key(remote.name, key)
        except sqlite3.IntegrityError:
            raise ConflictError(f"A remote named '{remote.name}' already exists. Remove it first "
                                f"(`stacklet remote rm {remote.name}`).") from None
        remote.has_key = key is not None
        return remote

    def remove_remote(self, name: str) -> None:
        if self._conn.execute("DELETE FROM remotes WHERE name = ?", (name,)).rowcount == 0:
            raise NotFoundError(f"No remote named '{name[:200]}'. See `stacklet remote list`.",
                                code="remote_not_found")
        with suppress(FileNotFoundError):
            self._key_path(name).unlink()

    def key(self, name: str) -> str | None:
        """The remote's API key, for the server to send upstream."""
        try:
            return self._key_path(name).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _key_path(self, name: str) -> Path:
        return self._key_dir / f"{check_remote_name(name)}.key"

    def _write_key(self, name: str, key: str | None) -> None:
        path = self._key_path(name)
        with suppress(FileNotFoundError):
            path.unlink()
        if key is None:
            return
        private_dir(self._key_dir)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")

    def _remote(self, row: tuple[Any, ...]) -> Remote:
        name, url, models, timeout, created = row
        return Remote(name, url, None if models is None else json.loads(models), timeout, created,
                      self._key_path(name).is_file())

    def close(self) -> None:
        self._conn.close()


def read_key(*, env: str | None, file: str | None) -> str | None:
    """An upstream key from an environment variable or a file (never from the command line)."""
    if env is not None and file is not None:
        raise InvalidRequestError("Give --api-key-env or --api-key-file, not both.")
    if env is not None:
        key = os.environ.get(env, "").strip()
        if not key:
            raise InvalidRequestError(f"The environment variable {env[:100]} is not set or empty.")
        return _check_key(key)
    if file is not None:
        try:
            data = Path(file).expanduser().read_bytes()[:MAX_KEY_BYTES + 1]
        except OSError as exc:
            raise InvalidRequestError(f"Cannot read the key file {file[:200]}: {exc.strerror}.") from None
        return _check_key(data.decode(errors="replace").strip())
    return None


def _check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_BYTES or not (key.isascii() and key.isprintable()) or " " in key:
        raise InvalidRequestError("The upstream key must be one line of printable ASCII characters without spaces.")
    return key


def _is_model(conn: sqlite3.Connection, name: str) -> bool:
    try:
        return conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is not None
    except sqlite3.OperationalError:  # no models table yet: nothing was ever pulled
        return False


def _route(row: tuple[Any, ...]) -> Route:
    name, targets, fallbacks, token_ids, created = row
    return Route(name, [Target(**t) for t in json.loads(targets)], json.loads(fallbacks), token_ids, created)
