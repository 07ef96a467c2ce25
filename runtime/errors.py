"""The one exception tree.

Each class knows its HTTP status, OpenAI error type and code, and the CLI exit code it maps to.
Engines, the store and the scheduler raise these; the server turns them into OpenAI error
envelopes and the CLI into one-line messages.
"""

from __future__ import annotations

from typing import Any


class StackletError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    exit_code: int = 1

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequestError(StackletError):
    status = 400
    type = "invalid_request_error"
    exit_code = 2


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"

    def __init__(self, limit: int, prompt_tokens: int, completion_tokens: int | None = None,
                 *, param: str = "messages") -> None:
        noun = "messages" if param == "messages" else "prompt"
        if completion_tokens:
            message = (
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in the {noun}, "
                f"{completion_tokens} in the completion). Please reduce the length of the {noun} "
                f"or completion. (context_length_exceeded)"
            )
        else:
            message = (
                f"This model's maximum context length is {limit} tokens. However, your {noun} "
                f"resulted in {prompt_tokens} tokens. Please reduce the length of the {noun}. "
                f"(context_length_exceeded)"
            )
        super().__init__(message, param=param)


def check_context(limit: int, prompt_tokens: int, max_tokens: int | None = None, *, param: str = "messages",
                  generating: bool = True) -> None:
    """The one context-length rule: the prompt and `max_tokens` must fit, and a generating request needs
    room for at least one token (an embedding input may fill the whole context)."""
    room = max(max_tokens or 0, 1 if generating else 0)
    if prompt_tokens + room > limit:
        raise ContextLengthExceededError(limit, prompt_tokens, max_tokens, param=param)


class AuthenticationError(StackletError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"
    exit_code = 3


class MissingApiKeyError(AuthenticationError):
    code = None  # OpenAI sends code null when no key was given at all


class PermissionDeniedError(StackletError):
    status = 403
    type = "invalid_request_error"
    exit_code = 3


class NotFoundError(StackletError):
    status = 404
    type = "invalid_request_error"
    exit_code = 4


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.")
        self.model = model


class ConflictError(StackletError):
    status = 409
    type = "invalid_request_error"
    exit_code = 5


class PayloadTooLargeError(StackletError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"
    exit_code = 2


class ServiceUnavailableError(StackletError):
    """Retryable: the SDKs retry 503 and honour Retry-After."""

    status = 503
    type = "server_error"
    exit_code = 6

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class QueueFullError(ServiceUnavailableError):
    code = "queue_full"


class WorkerError(StackletError):
    """A worker crashed or failed to start; the message never carries internals."""

    code = "worker_error"
    exit_code = 6


class EngineError(StackletError):
    """The engine failed on a request it had accepted."""

    exit_code = 6


class ConfigError(StackletError):
    exit_code = 2


class ServerNotRunningError(StackletError):
    status = 503
    exit_code = 7


# The store (pulls and local models)


class StoreError(StackletError):
    exit_code = 8


class RepoNotFoundError(NotFoundError):
    code = "repo_not_found"


class GatedRepoError(PermissionDeniedError):
    code = "gated_repo"


class FileNotInRepoError(InvalidRequestError):
    code = "file_not_found"


class ChecksumMismatchError(StoreError):
    code = "checksum_mismatch"


class HubUnreachableError(ServiceUnavailableError):
    code = "hub_unreachable"
    exit_code = 9


class HubResponseError(StoreError):
    """The hub (or an HF_ENDPOINT mirror) answered with something that cannot be right; nothing was stored."""

    status = 502
    code = "bad_hub_response"


class InsufficientStorageError(StoreError):
    """The disk (or the database on it) is full; what the operation had written is gone again."""

    status = 507
    code = "insufficient_storage"


class PullCancelledError(ServiceUnavailableError):
    """A pull stopped early because its client went away or the server is stopping; the partial stays."""

    code = "pull_cancelled"
