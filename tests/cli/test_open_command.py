"""`stacklet open`: the playground in the browser, signed in with a short-lived admin key in the fragment."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from cli.app import app
from runtime.config import Settings
from runtime.server import state
from runtime.store.keys import ADMIN, KeyStore
from runtime.store.registry import connect


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The links `webbrowser.open` was asked to open (this test process stands in for the server)."""
    links: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda link: links.append(link) or True)
    state.publish(Settings.load().paths.ensure(), os.getpid(), "127.0.0.1", 8123)
    return links


def test_open_hands_the_browser_a_short_lived_admin_key_in_the_fragment(opened: list[str]) -> None:
    result = CliRunner().invoke(app, ["open"])
    assert result.exit_code == 0, result.output
    page, _, key = opened[0].partition("#key=")
    assert page == "http://127.0.0.1:8123/playground" and "?" not in opened[0]
    assert key not in result.output and page in result.output
    store = KeyStore(Settings.load().paths)
    record = store.verify(key)
    assert record is not None and record.scope == ADMIN and record.name.startswith("open-")
    assert record.expires == pytest.approx(time.time() + 8 * 3600, abs=60)


def test_open_clears_away_its_own_expired_keys_only(opened: list[str]) -> None:
    store = KeyStore(Settings.load().paths)
    store.create("open-old", 1)
    store.create("mine", 1)
    connect(Settings.load().paths.database).execute("UPDATE keys SET expires = ?", (int(time.time()) - 1,))
    assert CliRunner().invoke(app, ["open"]).exit_code == 0
    names = {record.name for record in store.list()}
    assert "open-old" not in names and "mine" in names and len(names) == 2  # the expired user key stays listed


def test_open_without_a_browser_prints_the_link(opened: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("webbrowser.open", lambda link: False)
    result = CliRunner().invoke(app, ["open"])
    assert result.exit_code == 0 and "http://127.0.0.1:8123/playground#key=sk-stacklet-" in result.output


def test_open_without_a_server_says_how_to_start_one() -> None:
    result = subprocess.run([sys.executable, "-m", "cli", "open"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 7
    assert result.stderr.strip() == "error: No stacklet server is running. Start one with `stacklet serve -d`."


def test_serve_prints_the_playground_url(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.commands.server import _print_ready

    _print_ready("http://127.0.0.1:8123", auth=True)
    printed = capsys.readouterr().out
    assert "Playground: http://127.0.0.1:8123/playground (`stacklet open` opens it signed in)" in printed
