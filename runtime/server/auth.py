"""Bearer-key authentication with OpenAI's 401 bodies, and the bind-address safety check."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from runtime.config import Settings
from runtime.errors import AuthenticationError, ConfigError, MissingApiKeyError

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY). Create one with `stacklet keys create`."
)

_bearer = HTTPBearer(auto_error=False, description="A key from `stacklet keys create`.")


def mask(key: str) -> str:
    """OpenAI's way of echoing a wrong key: sk-ab***cdef."""
    return f"{key[:5]}***{key[-4:]}" if len(key) >= 12 else "***"


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    if not request.app.state.settings.auth:
        return
    if credentials is None or not credentials.credentials:
        raise MissingApiKeyError(MISSING_KEY_MESSAGE)
    key = credentials.credentials
    if request.app.state.keys.verify(key) is None:
        raise AuthenticationError(
            f"Incorrect API key provided: {mask(key)}. Create a key with `stacklet keys create` "
            "or list them with `stacklet keys list`."
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to expose an unauthenticated server beyond this machine."""
    if not settings.auth and not is_loopback(settings.host):
        raise ConfigError(
            f"Refusing to serve {settings.host} without authentication. "
            "Drop --no-auth, or bind 127.0.0.1."
        )
