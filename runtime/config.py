"""Settings and paths.

Precedence: explicit overrides (CLI flags) > STACKLET_* environment > config file > defaults.
Every path comes from platformdirs and moves under STACKLET_HOME when it is set.
Kept free of heavy imports: the CLI loads this on every start.
"""

from __future__ import annotations

import os
import sys
from contextlib import suppress
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, BinaryIO

from runtime.errors import ConfigError
from runtime.options import EngineOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

APP_NAME = "stacklet"
ENV_PREFIX = "STACKLET_"


@dataclass(frozen=True)
class Paths:
    cache: Path  # Hugging Face cache layout (blobs + snapshots)
    data: Path  # SQLite registry, keys
    config: Path  # config.toml
    state: Path  # server pid/port/token, worker sockets
    logs: Path
    home: Path | None = None  # STACKLET_HOME, when every path lives under it

    @classmethod
    def resolve(cls, home: str | None) -> Paths:
        if home:
            root = Path(home).expanduser().absolute()
            return cls(root / "cache", root / "data", root / "config", root / "state", root / "logs", root)
        import platformdirs

        return cls(
            Path(platformdirs.user_cache_dir(APP_NAME)),
            Path(platformdirs.user_data_dir(APP_NAME)),
            Path(platformdirs.user_config_dir(APP_NAME)),
            Path(platformdirs.user_state_dir(APP_NAME)),
            Path(platformdirs.user_log_dir(APP_NAME)),
        )

    @property
    def models(self) -> Path:
        return self.cache / "hub"

    @property
    def images(self) -> Path:
        """Images generated for `response_format: url`, written by workers and served by the server."""
        return self.cache / "images"

    @property
    def database(self) -> Path:
        return self.data / "stacklet.db"

    @property
    def config_file(self) -> Path:
        return self.config / "config.toml"

    def ensure(self) -> Paths:
        """Create the directories, private to their owner (tightening those of an older install)."""
        for path in (self.home, self.cache, self.data, self.config, self.state, self.logs, self.models, self.images):
            if path is not None:
                private_dir(path)
        return self


# Private data (the database, keys, the server log, generated images) is 0600 in 0700 directories.
PRIVATE_DIR_MODE, PRIVATE_FILE_MODE = 0o700, 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and its missing parents) for its owner only, or tighten it when it exists."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty for its owner only when missing (never truncating it), or tighten it.

    An existing file is never opened here: closing any descriptor of a file drops every POSIX lock this
    process holds on it, and SQLite's locks on the database are such locks (opening it here corrupted it).
    """
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    if path.stat().st_mode & 0o777 != PRIVATE_FILE_MODE:
        path.chmod(PRIVATE_FILE_MODE)
    return path


def open_private(path: Path, mode: str = "ab") -> BinaryIO:
    """`path` opened in binary `mode`, created (or tightened) for its owner only first."""
    private_file(path)
    return path.open(mode)  # type: ignore[return-value]


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    auth: bool = True
    keep_alive: float = 300.0  # seconds an idle model stays loaded; negative = forever
    max_loaded_models: int = 0  # 0 = limited by the memory budget only
    memory_budget: int = 0  # bytes; 0 = derived from system RAM (and VRAM when offloading)
    max_queue: int = 64  # waiting requests per model before 503
    max_body_bytes: int = 25 * 1024 * 1024  # JSON bodies and uploads (OpenAI's audio limit)
    cors_origins: tuple[str, ...] = ("*",)
    allowed_hosts: tuple[str, ...] = ()  # Host header names served besides the bind address (and localhost)
    read_timeout: float = 30.0  # seconds a client may take to send headers, or pause within a body
    write_timeout: float = 60.0  # seconds a client may leave a response unread before it is dropped
    max_connections: int = 1000  # open client connections; past it a new one gets a 503
    strict_params: bool = False  # reject unknown request fields like OpenAI does
    image_url_ttl: float = 3600.0  # seconds a generated image stays fetchable by URL
    image_fetch_private: bool = False  # chat image URLs may name loopback, link-local and private addresses
    response_ttl: float = 30 * 86400.0  # seconds a stored Responses answer stays retrievable
    import_dirs: tuple[str, ...] = ()  # directories the management API may import local files from
    remote_check_interval: float = 10.0  # seconds between active health checks of remote upstreams
    hub: str = "huggingface"  # where `owner/repo` pulls from: huggingface or modelscope
    engine: EngineOptions = field(default_factory=EngineOptions)
    paths: Paths = field(default_factory=lambda: Paths.resolve(None))

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        paths = Paths.resolve(env.get(ENV_PREFIX + "HOME"))
        values: dict[str, Any] = {}
        engine = EngineOptions()
        layers = (_read_config_file(paths.config_file), _read_env(env), overrides or {})
        for layer in layers:
            layer = {k: v for k, v in layer.items() if v is not None}
            engine = engine.merge(EngineOptions.from_dict(layer.pop("engine", None)))
            values.update(layer)
        return replace(cls(paths=paths, **_coerce(values)), engine=engine)


_FIELD_TYPES = {f.name: f.type for f in fields(Settings) if f.name not in ("engine", "paths")}


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}. Fix or delete the file.") from exc
    return {k.replace("-", "_"): v for k, v in data.items()}


def _read_env(env: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in _FIELD_TYPES:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = raw
    engine = {
        name: env[ENV_PREFIX + name.upper()]
        for name in EngineOptions.field_names()
        if ENV_PREFIX + name.upper() in env
    }
    if engine:
        values["engine"] = engine
    return values


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in values.items():
        kind = _FIELD_TYPES.get(name)
        if kind is None:
            raise ConfigError(f"Unknown setting '{name}'. Remove it from the config file or environment.")
        out[name] = _convert(name, kind, raw)
    return out


def _convert(name: str, kind: str, raw: Any) -> Any:
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"Invalid value {raw!r} for setting '{name}' (expected {kind}).") from None
