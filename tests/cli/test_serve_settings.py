"""`stacklet serve` settings layer flags > STACKLET_* environment > config file > defaults (README)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.commands import server
from runtime.config import Settings


def served(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Settings, list[str]]:
    """The settings `stacklet serve ARGS` would serve with, and the flags it hands `python -m runtime`."""
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(server, "run_foreground", seen.append)
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 0, result.output
    return Settings.load(seen[0]), server.server_args(seen[0])


def test_host_and_port_come_from_flags_then_environment_then_config_file(monkeypatch):
    assert (served(monkeypatch)[0].host, served(monkeypatch)[0].port) == ("127.0.0.1", 8080)
    config = Settings.load().paths.config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('host = "127.0.0.2"\nport = 9001\nkeep_alive = 60\n')
    settings, args = served(monkeypatch)
    assert (settings.host, settings.port, settings.keep_alive) == ("127.0.0.2", 9001, 60)
    assert args == []  # nothing typed: the server reads the same layers itself
    monkeypatch.setenv("STACKLET_PORT", "9002")
    monkeypatch.setenv("STACKLET_KEEP_ALIVE", "120")
    settings, _ = served(monkeypatch)
    assert (settings.host, settings.port, settings.keep_alive) == ("127.0.0.2", 9002, 120)
    settings, args = served(monkeypatch, "--port", "9003", "--host", "127.0.0.3", "--keep-alive", "5m")
    assert (settings.host, settings.port, settings.keep_alive) == ("127.0.0.3", 9003, 300)
    assert args == ["--host", "127.0.0.3", "--port", "9003", "--keep-alive", "300.0"]


def test_demo_serves_on_the_configured_port_unless_told_otherwise(monkeypatch):
    from cli.commands import demo

    started: list[dict[str, Any]] = []
    monkeypatch.setattr(demo, "MODELS", ())
    monkeypatch.setattr(server, "start_background", started.append)
    monkeypatch.setenv("STACKLET_PORT", "9004")
    assert CliRunner().invoke(app, ["demo"]).exit_code == 0
    assert CliRunner().invoke(app, ["demo", "--port", "9005"]).exit_code == 0
    assert [Settings.load(overrides).port for overrides in started] == [9004, 9005]
