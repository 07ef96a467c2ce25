"""Finding the running server and talking to it from the CLI: its management API, and the OpenAI API
of it or of any other server. Import-light (every command imports it): the rest loads when called."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ServerNotRunningError,
    ServiceUnavailableError,
    StackletError,
)

if TYPE_CHECKING:
    import httpx

    from runtime.config import Paths
    from runtime.server.state import ServerInfo

ERRORS_BY_STATUS: dict[int, type[StackletError]] = {
    error.status: error
    for error in (InvalidRequestError, AuthenticationError, PermissionDeniedError, NotFoundError, ConflictError,
                  ServiceUnavailableError)
}
NOT_RUNNING = "No stacklet server is running. Start one with `stacklet serve -d`."
TIMEOUT_S = 30.0
OPENAI_TIMEOUT_S = 600.0  # a long generation is one request


def require_server(paths: Paths) -> ServerInfo:
    from runtime.server import state

    info = state.running(paths)
    if info is None:
        raise ServerNotRunningError(NOT_RUNNING)
    return info


def local_openai_target() -> tuple[str, str]:
    """(OpenAI base URL, API key) of the running background server, using the CLI's admin key."""
    from runtime.config import Settings
    from runtime.store.keys import admin_key

    paths = Settings.load().paths
    info = require_server(paths)
    return f"{info.url}/v1", admin_key(paths)


def openai_target(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """`--base-url` and `--api-key` as given; with no base URL, the running stacklet server and (unless
    a key is given) the CLI's admin key."""
    if base_url is not None:
        return base_url, api_key
    local_url, admin = local_openai_target()
    return local_url, api_key or admin


def openai_client(base_url: str | None = None, api_key: str | None = None) -> Any:
    """An official openai client for `openai_target(base_url, api_key)`."""
    import openai

    base_url, api_key = openai_target(base_url, api_key)
    return openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0, timeout=OPENAI_TIMEOUT_S)


class ServerClient:
    """Management calls with the CLI's admin key; API errors become StackletError."""

    def __init__(self, paths: Paths) -> None:
        import httpx

        from runtime.store.keys import admin_key

        self.info = require_server(paths)
        self._http = httpx.Client(base_url=self.info.url, timeout=TIMEOUT_S,
                                  headers={"Authorization": f"Bearer {admin_key(paths)}"})

    def get(self, path: str) -> Any:
        import httpx

        try:
            response = self._http.get(path)
        except httpx.HTTPError as exc:
            raise ServerNotRunningError(f"The server at {self.info.url} does not answer ({exc}).") from None
        if response.status_code >= 400:
            raise _api_error(response)
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        try:
            response = self._http.post(path, json=body)
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
