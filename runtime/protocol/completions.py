"""OpenAI wire schemas for the legacy /completions: the request, and builders for responses."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from runtime.errors import InvalidRequestError
from runtime.protocol.chat import (
    ChoiceCount,
    LogitBias,
    Penalty,
    Stop,
    StreamOptions,
    Temperature,
    TopP,
    check_logit_bias,
    check_stream_options,
)
from runtime.protocol.common import OpenAIRequest

Prompt = str | list[str] | list[int] | list[list[int]]


class CreateCompletionRequest(OpenAIRequest):
    model: str
    prompt: Prompt | None = None  # None, "" or no tokens: the start of a document
    suffix: str | None = None
    max_tokens: Annotated[int | None, Field(ge=0)] = 16
    temperature: Temperature = None
    top_p: TopP = None
    n: ChoiceCount = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: Annotated[int | None, Field(ge=0, le=5)] = None
    echo: bool | None = None
    stop: Stop = None
    presence_penalty: Penalty = None
    frequency_penalty: Penalty = None
    best_of: Annotated[int | None, Field(ge=0, le=20)] = None
    logit_bias: LogitBias = None
    seed: int | None = None
    user: str | None = None

    def validate_semantics(self) -> None:
        check_stream_options(self.stream, self.stream_options)
        if self.best_of is not None and self.best_of < (self.n or 1):
            raise InvalidRequestError("best_of must be greater than or equal to n.", param="best_of",
                                      code="invalid_value")
        if self.stream and self.candidates > (self.n or 1):
            raise InvalidRequestError("Cannot stream results with best_of greater than n.", param="best_of",
                                      code="invalid_value")
        if self.prompt == []:
            raise InvalidRequestError("'$.prompt' is invalid: it must not be an empty list.", param="prompt")
        check_logit_bias(self.logit_bias)

    @property
    def candidates(self) -> int:
        """Completions generated per prompt; the `n` with the highest mean log-probability are returned."""
        return max(self.best_of or 1, self.n or 1)

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of single prompts, each text or token ids."""
        prompt = self.prompt if self.prompt is not None else ""
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(p, int) for p in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]


def legacy_logprobs(tokens: list[str], logprobs: list[float | None], top: list[dict[str, float] | None],
                    text_offset: list[int]) -> dict[str, Any]:
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": top, "text_offset": text_offset}


def choice(index: int, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}


def completion(completion_id: str, created: int, model: str, fingerprint: str, choices: list[dict[str, Any]],
               usage_: dict[str, Any] | None) -> dict[str, Any]:
    out = {"id": completion_id, "object": "text_completion", "created": created, "model": model,
           "system_fingerprint": fingerprint, "choices": choices}
    if usage_ is not None:
        out["usage"] = usage_
    return out


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
