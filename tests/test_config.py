"""Settings precedence (flags > STACKLET_* env > config file > defaults) and STACKLET_HOME relocation."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import Paths, Settings
from runtime.errors import ConfigError


def write_config(home: Path, text: str) -> None:
    config = Paths.resolve(str(home)).config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)


def test_defaults(tmp_path: Path) -> None:
    settings = Settings.load(environ={"STACKLET_HOME": str(tmp_path)})
    assert (settings.host, settings.port, settings.auth, settings.max_queue) == ("127.0.0.1", 8080, True, 64)
    assert settings.engine.as_dict() == {}


def test_precedence(tmp_path: Path) -> None:
    write_config(tmp_path, 'port = 9000\nhost = "0.0.0.0"\nmax_queue = 5\n')
    env = {"STACKLET_HOME": str(tmp_path), "STACKLET_PORT": "9100", "STACKLET_HOST": "10.0.0.1"}
    settings = Settings.load({"port": 9200, "host": None}, environ=env)
    assert settings.port == 9200  # flag beats env and file
    assert settings.host == "10.0.0.1"  # env beats file; an unset flag (None) does not count
    assert settings.max_queue == 5  # file beats default
    assert settings.keep_alive == 300.0  # default


def test_engine_options_layer_per_field(tmp_path: Path) -> None:
    write_config(tmp_path, '[engine]\nn_gpu_layers = "all"\nctx_size = 2048\nthreads = 2\n')
    env = {"STACKLET_HOME": str(tmp_path), "STACKLET_CTX_SIZE": "4096", "STACKLET_THREADS": "3"}
    settings = Settings.load({"engine": {"threads": 4}}, environ=env)
    assert settings.engine.as_dict() == {"n_gpu_layers": "all", "ctx_size": 4096, "threads": 4}


def test_env_values_are_converted(tmp_path: Path) -> None:
    env = {"STACKLET_HOME": str(tmp_path), "STACKLET_AUTH": "off", "STACKLET_CORS_ORIGINS": "http://a, http://b"}
    settings = Settings.load(environ=env)
    assert settings.auth is False
    assert settings.cors_origins == ("http://a", "http://b")


def test_bad_values_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        Settings.load(environ={"STACKLET_HOME": str(tmp_path), "STACKLET_PORT": "eighty"})
    write_config(tmp_path, "colour = 'blue'\n")
    with pytest.raises(ConfigError, match="colour"):
        Settings.load(environ={"STACKLET_HOME": str(tmp_path)})
    write_config(tmp_path, "port = [\n")
    with pytest.raises(ConfigError, match="config.toml"):
        Settings.load(environ={"STACKLET_HOME": str(tmp_path)})


def test_stacklet_home_relocates_every_path(tmp_path: Path) -> None:
    paths = Settings.load(environ={"STACKLET_HOME": str(tmp_path)}).paths
    for path in (paths.cache, paths.data, paths.config, paths.state, paths.logs, paths.models, paths.database,
                 paths.config_file):
        assert path.is_relative_to(tmp_path)
    assert paths.models == paths.cache / "hub"


def test_without_home_paths_come_from_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    paths = Settings.load(environ={}).paths
    assert paths.cache == tmp_path / "xdg-cache" / "stacklet"
    assert paths.data == tmp_path / "xdg-data" / "stacklet"


def test_the_test_suite_runs_in_a_temporary_home(stacklet_home: Path) -> None:
    assert Settings.load().paths.data.is_relative_to(stacklet_home)
