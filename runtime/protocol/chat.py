"""OpenAI wire schemas for /chat/completions: the request, and builders for the response and chunks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from runtime.errors import InvalidRequestError
from runtime.protocol.common import OpenAIRequest

Temperature = Annotated[float | None, Field(ge=0, le=2)]
TopP = Annotated[float | None, Field(ge=0, le=1)]
Penalty = Annotated[float | None, Field(ge=-2, le=2)]
ChoiceCount = Annotated[int | None, Field(ge=1, le=128)]
TokenLimit = Annotated[int | None, Field(ge=1)]
# A single stop string becomes a list first, so errors name `stop` rather than a union branch.
Stop = Annotated[Annotated[list[str], Field(min_length=1, max_length=4)] | None,
                 BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]
LogitBias = dict[str, Annotated[float, Field(ge=-100, le=100)]] | None


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TextPart(Loose):
    type: Literal["text"]
    text: str


class ImageURL(Loose):
    url: str
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the model's projector sets the resolution


class ImagePart(Loose):
    type: Literal["image_url"]
    image_url: ImageURL


class AudioPart(Loose):
    type: Literal["input_audio"]
    input_audio: dict[str, Any]


class FilePart(Loose):
    type: Literal["file"]
    file: dict[str, Any]


class RefusalPart(Loose):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[TextPart | ImagePart | AudioPart | FilePart | RefusalPart, Field(discriminator="type")]


class FunctionCall(Loose):
    name: str
    arguments: str  # a JSON string, passed to the template as sent


class ToolCall(Loose):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class CustomCall(Loose):
    name: str
    input: str


class CustomToolCall(Loose):
    id: str
    type: Literal["custom"]
    custom: CustomCall


def _call_type(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind or "function"  # clients that leave out `type` mean a function


AnyToolCall = Annotated[Annotated[ToolCall, Tag("function")] | Annotated[CustomToolCall, Tag("custom")],
                        Discriminator(_call_type)]


# Text or a list of parts, decided by the value, so that a bad part is reported as itself (e.g. an image's
# `detail`) rather than as "content is not a string".
MessageContent = Annotated[Annotated[str, Tag("str")] | Annotated[list[ContentPart], Tag("list")],
                           Discriminator(lambda value: "str" if isinstance(value, str) else "list")]


class ChatMessage(Loose):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: MessageContent | None = None
    name: str | None = None
    tool_calls: list[AnyToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    function_call: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None


class FunctionDefinition(Loose):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Loose):
    type: Literal["function"]
    function: FunctionDefinition


class GrammarDefinition(Loose):
    syntax: Literal["lark", "regex"]
    definition: str


class TextInput(Loose):
    type: Literal["text"]


class GrammarInput(Loose):
    type: Literal["grammar"]
    grammar: GrammarDefinition


class CustomDefinition(Loose):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    format: Annotated[TextInput | GrammarInput, Field(discriminator="type")] | None = None


class CustomTool(Loose):
    type: Literal["custom"]
    custom: CustomDefinition

    def grammar(self) -> tuple[str, str] | None:
        """(syntax, definition) of a grammar-format tool; None for free text."""
        fmt = self.custom.format
        return (fmt.grammar.syntax, fmt.grammar.definition) if isinstance(fmt, GrammarInput) else None


AnyTool = Annotated[Tool | CustomTool, Field(discriminator="type")]


class NamedFunction(Loose):
    name: str


class NamedToolChoice(Loose):
    type: Literal["function"]
    function: NamedFunction


class NamedCustomToolChoice(Loose):
    type: Literal["custom"]
    custom: NamedFunction


class AllowedTool(Loose):
    type: Literal["function", "custom"]
    function: NamedFunction | None = None
    custom: NamedFunction | None = None

    def name(self) -> str | None:
        named = self.function if self.type == "function" else self.custom
        return named.name if named is not None else None


class AllowedTools(Loose):
    mode: Literal["auto", "required"]
    tools: Annotated[list[AllowedTool], Field(min_length=1)]


class AllowedToolsChoice(Loose):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = Annotated[NamedToolChoice | NamedCustomToolChoice | AllowedToolsChoice, Field(discriminator="type")]


class StreamOptions(Loose):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class JSONSchemaFormat(Loose):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextFormat(Loose):
    type: Literal["text"]


class JSONObjectFormat(Loose):
    type: Literal["json_object"]


class JSONSchemaResponseFormat(Loose):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[TextFormat | JSONObjectFormat | JSONSchemaResponseFormat, Field(discriminator="type")]


class CreateChatCompletionRequest(OpenAIRequest):
    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: TokenLimit = None
    max_tokens: TokenLimit = None
    temperature: Temperature = None
    top_p: TopP = None
    n: ChoiceCount = None
    stop: Stop = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int | None, Field(ge=0, le=20)] = None
    logit_bias: LogitBias = None
    frequency_penalty: Penalty = None
    presence_penalty: Penalty = None
    seed: int | None = None
    response_format: ResponseFormat | None = None
    tools: list[AnyTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    # Accepted so strict mode knows them; they change nothing for a local model.
    reasoning_effort: str | None = None
    verbosity: str | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None

    def validate_semantics(self) -> None:
        check_stream_options(self.stream, self.stream_options)
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequestError(
                "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
                param="top_logprobs", code="invalid_value",
            )
        check_logit_bias(self.logit_bias)
        if self.modalities and "audio" in self.modalities:
            raise InvalidRequestError("This model does not support audio output.", param="modalities",
                                      code="unsupported_value")
        self._check_tool_choice()
        for i, message in enumerate(self.messages):
            if message.role == "tool" and not message.tool_call_id:
                raise InvalidRequestError(f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                                          param=f"messages[{i}].tool_call_id", code="missing_required_parameter")

    def _check_tool_choice(self) -> None:
        names = [tool_name(t) for t in self.all_tools()]
        for name in names:
            if names.count(name) > 1:
                raise InvalidRequestError(f"Invalid value for 'tools': the name '{name}' is used by more than one "
                                          "tool. Give each tool its own name.", param="tools")
        if self.tool_choice is not None and not self.tools:
            raise InvalidRequestError("Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                                      "'tools' are specified.", param="tool_choice")
        choice = self.tool_choice if self.tool_choice is not None else self.function_call
        if isinstance(choice, NamedToolChoice | NamedFunction):
            self._check_named("function", choice.name if isinstance(choice, NamedFunction) else choice.function.name,
                              "tool_choice")
        elif isinstance(choice, NamedCustomToolChoice):
            self._check_named("custom", choice.custom.name, "tool_choice")
        elif isinstance(choice, AllowedToolsChoice):
            for i, allowed in enumerate(choice.allowed_tools.tools):
                where = f"tool_choice.allowed_tools.tools[{i}]"
                name = allowed.name()
                if name is None:
                    raise InvalidRequestError(f"Missing required parameter: '{where}.{allowed.type}'.",
                                              param=f"{where}.{allowed.type}", code="missing_required_parameter")
                self._check_named(allowed.type, name, where)

    def _check_named(self, kind: str, name: str, param: str) -> None:
        if not any(t.type == kind and tool_name(t) == name for t in self.all_tools()):
            noun = "function" if kind == "function" else "custom tool"
            raise InvalidRequestError(f"Invalid value for '{param}': no {noun} named '{name}' was specified in the "
                                      "'tools' parameter.", param=param)

    def all_tools(self) -> list[Tool | CustomTool]:
        """`tools`, or the deprecated `functions` as tools."""
        if self.tools:
            return self.tools
        return [Tool(type="function", function=f) for f in self.functions or []]

    def function_tools(self) -> list[Tool]:
        return [t for t in self.all_tools() if isinstance(t, Tool)]

    def custom_tools(self) -> list[CustomTool]:
        return [t for t in self.all_tools() if isinstance(t, CustomTool)]

    def callable_tools(self) -> list[Tool | CustomTool]:
        """The tools the model may call: all of them, or those `allowed_tools` lists."""
        choice = self.tool_choice
        if not isinstance(choice, AllowedToolsChoice):
            return self.all_tools()
        allowed = {(a.type, a.name()) for a in choice.allowed_tools.tools}
        return [t for t in self.all_tools() if (t.type, tool_name(t)) in allowed]

    def effective_tool_choice(self) -> str:
        """"none", "auto", "required", or the name of the tool (function or custom) the model must call."""
        choice = self.tool_choice if self.tool_choice is not None else self.function_call
        if choice is None:
            return "auto" if self.all_tools() else "none"
        if isinstance(choice, NamedToolChoice):
            return choice.function.name
        if isinstance(choice, NamedCustomToolChoice):
            return choice.custom.name
        if isinstance(choice, AllowedToolsChoice):
            return choice.allowed_tools.mode
        if isinstance(choice, NamedFunction):
            return choice.name
        return choice

    def max_output_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def tool_name(tool: Tool | CustomTool) -> str:
    return tool.function.name if isinstance(tool, Tool) else tool.custom.name


def check_stream_options(stream: bool | None, stream_options: StreamOptions | None) -> None:
    if stream_options is not None and not stream:
        raise InvalidRequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )


def check_logit_bias(logit_bias: dict[str, float] | None) -> None:
    for key in logit_bias or {}:
        if not key.lstrip("-").isdigit():
            raise InvalidRequestError(f"Invalid key in 'logit_bias': '{key}' is not a token id.",
                                      param="logit_bias", code="invalid_value")


def stop_list(stop: list[str] | None) -> list[str]:
    return [s for s in stop or [] if s]


# Responses


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
          reasoning_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def token_logprob(token: str, logprob: float, token_bytes: list[int],
                  top: list[tuple[str, float, list[int]]]) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": token_bytes,
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": b} for t, lp, b in top]}


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def custom_tool_call(call_id: str, name: str, input_: str) -> dict[str, Any]:
    return {"id": call_id, "type": "custom", "custom": {"name": name, "input": input_}}


def message(content: str | None, tool_calls: list[dict[str, Any]] | None = None,
            reasoning: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if reasoning:
        out["reasoning_content"] = reasoning
    if tool_calls:
        out["tool_calls"] = tool_calls
    return out


def choice(index: int, msg: dict[str, Any], finish_reason: str,
           logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"index": index, "message": msg,
            "logprobs": {"content": logprobs, "refusal": None} if logprobs is not None else None,
            "finish_reason": finish_reason}


def completion(completion_id: str, created: int, model: str, fingerprint: str,
               choices: list[dict[str, Any]], usage_: dict[str, Any]) -> dict[str, Any]:
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage_, "system_fingerprint": fingerprint}


def chunk(completion_id: str, created: int, model: str, fingerprint: str,
          choices: list[dict[str, Any]], usage_: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
           "system_fingerprint": fingerprint, "choices": choices}
    if usage_ is not None:
        out["usage"] = usage_
    return out


def chunk_choice(index: int, delta: dict[str, Any], logprobs: list[dict[str, Any]] | None = None,
                 finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta,
            "logprobs": {"content": logprobs, "refusal": None} if logprobs is not None else None,
            "finish_reason": finish_reason}
