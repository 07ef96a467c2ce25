"""Finding the running server and talking to its management API from the CLI."""

from __future__ import annotations

from typing import Any

import httpx

from runtime.config import Paths, Settings
from runtime.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    ServerNotRunningError,
    ServiceUnavailableError,
    StackletError,
)
from runtime.scheduler import state
from runtime.scheduler.state import ServerInfo

ERRORS_BY_STATUS: dict[int, type[StackletError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 404: NotFoundError, 409: ConflictError,
    503: ServiceUnavailableError,
}
NOT_RUNNING = "No stacklet server is running. Start one with `stacklet serve -d`."
TIMEOUT_S = 30.0


def running_server(paths: Paths) -> ServerInfo | None:
    """The live server of this STACKLET_HOME; a record left by a dead server is removed."""
    info = state.read(paths)
    if info is not None and not info.is_running():
        state.retract(paths, info.pid)
        return None
    return info


def require_server(paths: Paths) -> ServerInfo:
    info = running_server(paths)
    if info is None:
        raise ServerNotRunningError(NOT_RUNNING)
    return info


def local_openai_target() -> tuple[str, str]:
    """(OpenAI base URL, API key) of the running background server, using the CLI's admin key."""
    from runtime.store.keys import admin_key

    paths = Settings.load().paths
    info = require_server(paths)
    return f"{info.url}/v1", admin_key(paths)


class ServerClient:
    """Management calls with the CLI's admin key; API errors become StackletError."""

    def __init__(self, paths: Paths) -> None:
        from runtime.store.keys import admin_key

        self.info = require_server(paths)
        self._http = httpx.Client(base_url=self.info.url, timeout=TIMEOUT_S,
                                  headers={"Authorization": f"Bearer {admin_key(paths)}"})

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, json=body or {})

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerNotRunningError(f"The server at {self.info.url} does not answer ({exc}).") from None
        if response.status_code >= 400:
            raise _api_error(response)
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def _api_error(response: httpx.Response) -> StackletError:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"The server answered HTTP {response.status_code}."
    return ERRORS_BY_STATUS.get(response.status_code, StackletError)(message)
