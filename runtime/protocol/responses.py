"""OpenAI wire schema for POST /responses (the request; runtime/agents/responses.py renders replies).

Input items, tools and formats are checked item by item where they are translated, so the errors
name the exact field; here the top level is typed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from runtime.errors import InvalidRequestError
from runtime.protocol.chat import Temperature, TopP
from runtime.protocol.common import OpenAIRequest


class CreateResponseRequest(OpenAIRequest):
    model: str
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    temperature: Temperature = None
    top_p: TopP = None
    max_output_tokens: Annotated[int | None, Field(ge=1)] = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    background: bool | None = None
    seed: int | None = None
    # Accepted so strict mode knows them; they change nothing for a local model.
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None

    def validate_semantics(self) -> None:
        if self.background:
            raise InvalidRequestError("Background responses are not supported by this server: leave out "
                                      "'background' (or set it to false).", param="background",
                                      code="unsupported_parameter")
        if self.input is None and self.previous_response_id is None:
            raise InvalidRequestError("Missing required parameter: 'input'.", param="input",
                                      code="missing_required_parameter")
        if isinstance(self.input, list) and not self.input and self.previous_response_id is None:
            raise InvalidRequestError("Invalid 'input': empty array. Expected at least one item.", param="input",
                                      code="empty_array")


class ListInputItemsQuery(OpenAIRequest):
    after: str | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    order: Literal["asc", "desc"] = "desc"
