"""API keys: the store (hashing, expiry, revocation, scopes), the CLI's admin key, and `stacklet keys`."""

from __future__ import annotations

import hashlib
import json
import stat
import time

import pytest
from typer.testing import CliRunner

from cli.app import app
from runtime.config import Settings
from runtime.errors import ConflictError, InvalidRequestError, NotFoundError
from runtime.store.keys import ADMIN, INFERENCE, KEY_PREFIX, KeyStore, admin_key
from runtime.store.registry import connect


@pytest.fixture
def store() -> KeyStore:
    return KeyStore(Settings.load().paths)


def test_keys_are_stored_hashed_and_verified(store):
    key, record = store.create("ci")
    assert key.startswith(KEY_PREFIX) and len(key) > 40
    assert record.prefix == key[: len(record.prefix)] and record.prefix != key
    rows = connect(Settings.load().paths.database).execute("SELECT * FROM keys").fetchall()
    assert key not in json.dumps(rows)
    assert store.verify(key).name == "ci"
    assert store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.verify("sk-nothing") is None


def test_verify_records_last_use(store):
    key, _ = store.create("ci")
    assert store.list()[0].last_used is None
    store.verify(key)
    assert store.list()[0].last_used == pytest.approx(time.time(), abs=5)


def test_expired_keys_fail(store):
    key, record = store.create("soon", expires_days=1)
    assert record.expires == pytest.approx(time.time() + 86400, abs=5)
    store._conn.execute("UPDATE keys SET expires = ? WHERE name = 'soon'", (int(time.time()) - 1,))
    assert store.verify(key) is None


def test_revoke_and_errors(store):
    key, _ = store.create("ci")
    with pytest.raises(ConflictError):
        store.create("ci")
    with pytest.raises(InvalidRequestError):
        store.create("bad name!")
    with pytest.raises(InvalidRequestError):
        store.create("x", expires_days=0)
    store.revoke("ci")
    assert store.verify(key) is None
    with pytest.raises(NotFoundError):
        store.revoke("ci")


def test_admin_key_is_private_stable_and_recreated_after_revoke(store):
    paths = Settings.load().paths
    key = admin_key(paths)
    path = paths.data / "admin.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert admin_key(paths) == key
    assert store.verify(key).name == "admin"
    store.revoke("admin")
    fresh = admin_key(paths)
    assert fresh != key and store.verify(fresh) is not None


def test_keys_cli_create_list_revoke():
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--name", "laptop", "--expires", "30", "--json"])
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)["key"]
    assert KeyStore(Settings.load().paths).verify(key).name == "laptop"
    listed = runner.invoke(app, ["keys", "list", "--json"])
    entries = json.loads(listed.stdout)
    assert [e["name"] for e in entries] == ["laptop"]
    assert key not in listed.stdout
    assert entries[0]["expires"] > time.time() + 29 * 86400
    table = runner.invoke(app, ["keys", "list"])
    assert "laptop" in table.stdout and key not in table.stdout
    assert runner.invoke(app, ["keys", "revoke", "laptop"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout) == []


def test_keys_cli_prints_the_key_once_in_plain_mode():
    result = CliRunner().invoke(app, ["keys", "create"])
    assert result.exit_code == 0
    key = result.stdout.strip()
    assert key.startswith(KEY_PREFIX)
    assert KeyStore(Settings.load().paths).verify(key) is not None


def test_keys_are_inference_keys_unless_made_admin(store):
    inference_key, inference = store.create("app")
    admin, record = store.create("ops", scope=ADMIN)
    assert (inference.scope, record.scope) == (INFERENCE, ADMIN)
    assert store.verify(inference_key).scope == INFERENCE and store.verify(admin).scope == ADMIN
    assert {k.name: k.scope for k in store.list()} == {"app": INFERENCE, "ops": ADMIN}
    with pytest.raises(InvalidRequestError, match="inference or admin"):
        store.create("root", scope="root")


def test_keys_from_before_scopes_become_admin_keys():
    """A database from an older stacklet: its keys could do everything, so they keep doing it."""
    paths = Settings.load().paths
    old = connect(paths.database)
    old.executescript("CREATE TABLE keys (name TEXT PRIMARY KEY, prefix TEXT NOT NULL, hash TEXT NOT NULL, "
                      "created INTEGER NOT NULL, last_used INTEGER, expires INTEGER)")
    key = KEY_PREFIX + "old-script-key-0123456789"
    old.execute("INSERT INTO keys VALUES ('script', ?, ?, 1, NULL, NULL)",
                (key[:len(KEY_PREFIX) + 4], hashlib.sha256(key.encode()).hexdigest()))
    old.close()
    migrated = KeyStore(paths)
    assert migrated.verify(key).scope == ADMIN
    assert migrated.create("new")[1].scope == INFERENCE
    assert KeyStore(paths).verify(key).scope == ADMIN  # opening it again migrates nothing twice


def test_the_cli_key_is_an_admin_key(store):
    paths = Settings.load().paths
    assert store.verify(admin_key(paths)).scope == ADMIN
    store.revoke("admin")
    inference_key, _ = store.create("admin")  # someone took the name with an inference key
    (paths.data / "admin.key").write_text(inference_key)
    fresh = admin_key(paths)
    assert fresh != inference_key and store.verify(fresh).scope == ADMIN


def test_keys_cli_scopes():
    runner = CliRunner()
    inference = json.loads(runner.invoke(app, ["keys", "create", "--name", "app", "--json"]).stdout)
    admin = runner.invoke(app, ["keys", "create", "--name", "ops", "--admin", "--json"])
    assert admin.exit_code == 0, admin.output
    assert (inference["scope"], json.loads(admin.stdout)["scope"]) == (INFERENCE, ADMIN)
    assert KeyStore(Settings.load().paths).verify(json.loads(admin.stdout)["key"]).scope == ADMIN
    listed = runner.invoke(app, ["keys", "list", "--json"])
    assert {e["name"]: e["scope"] for e in json.loads(listed.stdout)} == {"app": INFERENCE, "ops": ADMIN}
    table = runner.invoke(app, ["keys", "list"]).stdout
    assert "scope" in table and "inference" in table and "admin" in table
    plain = runner.invoke(app, ["keys", "create", "--name", "other"])
    assert "Inference key 'other' created" in plain.stderr
