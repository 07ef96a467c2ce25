"""Bearer-key authentication with OpenAI's 401 bodies, key scopes (403), and the bind-address safety check."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from runtime.config import Settings
from runtime.errors import AuthenticationError, ConfigError, MissingApiKeyError, PermissionDeniedError
from runtime.store.keys import ADMIN, ApiKey

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY). Create one with `stacklet keys create`."
)
# OpenAI's wording for a restricted key, with a 403 (not OpenAI's 401): the key is right, its scope is not.
MISSING_ADMIN_SCOPE_MESSAGE = (
    "You have insufficient permissions for this operation. Missing scope: admin. The key '{name}' is an "
    "inference key, which serves the OpenAI routes only; pulling, deleting, loading, unloading and configuring "
    "models need an admin key: create one with `stacklet keys create --admin`."
)

_bearer = HTTPBearer(auto_error=False, description="A key from `stacklet keys create`.")


def mask(key: str) -> str:
    """OpenAI's way of echoing a wrong key: sk-ab***cdef."""
    return f"{key[:5]}***{key[-4:]}" if len(key) >= 12 else "***"


def presented_key(request: Request) -> str | None:
    """The key the client sent: a Bearer token, or `x-api-key` as the Anthropic SDKs and Claude Code send it."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


async def require_api_key(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> ApiKey | None:
    """The caller's key, of any scope; None when auth is off. (`_` puts Bearer auth in the OpenAPI document.)"""
    return check_key(request, presented_key(request))


def check_key(request: Request, key: str | None) -> ApiKey | None:
    if not request.app.state.settings.auth:
        return None
    if not key:
        raise MissingApiKeyError(MISSING_KEY_MESSAGE)
    record = request.app.state.keys.verify(key)
    if record is None:
        raise AuthenticationError(
            f"Incorrect API key provided: {mask(key)}. Create a key with `stacklet keys create` "
            "or list them with `stacklet keys list`."
        )
    return record


async def require_admin_key(key: Annotated[ApiKey | None, Depends(require_api_key)]) -> None:
    """Model management needs an admin key (FastAPI runs require_api_key once per request)."""
    if key is not None and key.scope != ADMIN:
        raise PermissionDeniedError(MISSING_ADMIN_SCOPE_MESSAGE.format(name=key.name), code="insufficient_scope")


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
