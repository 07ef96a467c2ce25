"""Routes and remotes in the SQLite database: validation, round trips, private key files."""

from __future__ import annotations

import pytest

from runtime.config import Settings
from runtime.errors import ConflictError, InvalidRequestError, NotFoundError
from runtime.store.registry import ModelRecord, Registry
from runtime.store.routes import Remote, Route, RouteStore, Target, base_url, read_key, split_target


@pytest.fixture
def store() -> RouteStore:
    paths = Settings.load().paths.ensure()
    registry = Registry(paths)
    registry.add(ModelRecord(name="smol", kind="llm", source={"type": "fake"}, engine="fake"))
    registry.close()
    routes = RouteStore(paths)
    yield routes
    routes.close()


def test_routes_round_trip_and_name_local_models_or_remotes(store):
    store.add_remote(Remote("node-a", "http://10.0.0.2:8000"), None)
    store.set_route(Route("chat", [Target("node-a:qwen", 3), Target("smol")], ["smol"]))
    route = store.route("chat")
    assert route.targets == [Target("node-a:qwen", 3), Target("smol", 1)] and route.fallbacks == ["smol"]
    with pytest.raises(NotFoundError):
        store.set_route(Route("x", [Target("nobody:qwen")]))
    with pytest.raises(ConflictError):
        store.set_route(Route("smol", [Target("smol")]))
    with pytest.raises(InvalidRequestError):
        store.set_route(Route("x", [Target("smol", 0)]))
    store.remove_route("chat")
    assert store.routes() == []
    with pytest.raises(NotFoundError):
        store.remove_route("chat")


def test_remote_keys_are_private_files_never_listed(store, stacklet_home, monkeypatch):
    monkeypatch.setenv("UPSTREAM", "sk-upstream")
    remote = store.add_remote(Remote("gpu", "https://gpu.lan:8000/v1", ["qwen"], 60), read_key(env="UPSTREAM",
                                                                                              file=None))
    assert remote.has_key and "sk-upstream" not in str(remote.to_dict())
    key_file = stacklet_home / "data" / "remote-keys" / "gpu.key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and store.key("gpu") == "sk-upstream"
    with pytest.raises(ConflictError):
        store.add_remote(Remote("gpu", "http://x"), None)
    store.remove_remote("gpu")
    assert not key_file.exists()


@pytest.mark.parametrize("url", ["ftp://host", "http://user:pw@host", "not a url", "http://host/v1?x=1"])
def test_bad_remote_urls_are_refused(url):
    with pytest.raises(InvalidRequestError):
        base_url(url)


def test_urls_targets_and_keys():
    assert base_url("http://h:1") == "http://h:1/v1" and base_url("http://h:1/v1/") == "http://h:1/v1"
    assert split_target("node-a:qwen:7b") == ("node-a", "qwen:7b") and split_target("smol") == (None, "smol")
    with pytest.raises(InvalidRequestError):
        read_key(env="STACKLET_NO_SUCH_VARIABLE", file=None)
    with pytest.raises(InvalidRequestError):
        read_key(env="A", file="b")
