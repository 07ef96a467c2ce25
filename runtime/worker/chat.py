"""/v1/chat/completions on a TextEngine: request -> prompt and sampling, deltas -> OpenAI shapes."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from runtime.engines.base import SamplingParams, TextDelta, TextEngine, Usage
from runtime.engines.llama import customtools, grammar
from runtime.engines.llama.toolcalls import custom_call_open
from runtime.errors import InvalidRequestError, check_context
from runtime.http.bridge import read_on_loop
from runtime.protocol import chat as wire
from runtime.protocol.chat import ChatMessage, CreateChatCompletionRequest
from runtime.spec import WorkerLimits
from runtime.worker import images_in
from runtime.worker.choices import ChoiceOutput

NON_TEXT_PARTS = {"image_url": "image", "input_audio": "audio", "file": "file"}
DEFAULT_FETCH = images_in.FetchPolicy(WorkerLimits().max_upload_bytes)


@dataclass
class ImageRefs:
    """The image parts of a conversation in order, each replaced in the text by `marker`."""

    marker: str = field(default_factory=lambda: f"<__image_{uuid.uuid4().hex}__>")  # no client can guess it
    urls: list[tuple[str, str]] = field(default_factory=list)  # (url, param)


@dataclass
class ChatJob:
    """Everything one request needs once its prompt is rendered."""

    request: CreateChatCompletionRequest
    prompt: list[int]
    params: SamplingParams
    n: int
    tool_choice: str
    tool_names: set[str]  # the functions the model may call
    custom_names: set[str]  # the custom tools it may call
    thinking: bool
    fingerprint: str
    images: list[Any] = field(default_factory=list)  # the engine's image spans in the prompt
    completion_id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex[:29])
    created: int = field(default_factory=lambda: int(time.time()))

    def outputs(self) -> list[ChoiceOutput]:
        parallel = self.request.parallel_tool_calls is not False
        return [ChoiceOutput(self.tool_choice, self.tool_names, self.thinking, parallel, self.custom_names)
                for _ in range(self.n)]


def prepare(engine: TextEngine, req: CreateChatCompletionRequest, fingerprint: str,
            fetch: images_in.FetchPolicy = DEFAULT_FETCH) -> ChatJob:
    """Render and tokenize the prompt (fetching and encoding its images), check it fits, and build the
    sampling parameters (blocking)."""
    tool_choice = req.effective_tool_choice()
    grammars = custom_grammars(req)
    tools = [t.model_dump(exclude_none=True) for t in req.all_tools()] if tool_choice != "none" else []
    output = output_grammar(req, tool_choice, grammars)  # first: a schema it refuses is never rendered
    refs = ImageRefs() if "vision" in engine.capabilities else None  # type: ignore[attr-defined]
    messages = [template_message(m, i, refs) for i, m in enumerate(req.messages)]
    if req.response_format is not None and req.response_format.type == "json_schema":
        messages = grammar.with_schema(messages, req.response_format.json_schema.schema_)
    text = engine.render_chat(messages, tools or None)
    thinking = text.rstrip().endswith("<think>")
    stop = wire.stop_list(req.stop)
    if isinstance(req.tool_choice, wire.NamedCustomToolChoice):
        text += custom_call_open(tool_choice)  # the model writes only the input (customtools.py)
        if grammars[tool_choice] is None:
            stop += customtools.NAMED_STOPS
    prompt, images = tokenize(engine, text, refs, fetch)
    max_tokens = req.max_output_tokens()
    check_context(engine.context_length, len(prompt), max_tokens, param="messages")
    params = sampling_params(req.temperature, req.top_p, req.seed, req.presence_penalty, req.frequency_penalty,
                             req.logit_bias, stop, max_tokens)
    params.logprobs = (req.top_logprobs or 0) if req.logprobs else None
    params.grammar = output
    callable_tools = req.callable_tools()
    return ChatJob(req, prompt, params, req.n or 1, tool_choice,
                   {wire.tool_name(t) for t in callable_tools if isinstance(t, wire.Tool)},
                   {wire.tool_name(t) for t in callable_tools if isinstance(t, wire.CustomTool)},
                   thinking=thinking, fingerprint=fingerprint, images=images)


def tokenize(engine: TextEngine, text: str, refs: ImageRefs | None,
             fetch: images_in.FetchPolicy) -> tuple[list[int], list[Any]]:
    if refs is None or not refs.urls:
        return engine.tokenize(text), []
    if len(refs.urls) > images_in.MAX_IMAGES:
        raise InvalidRequestError(f"A request takes at most {images_in.MAX_IMAGES} images; it has "
                                  f"{len(refs.urls)}.", param="messages", code="too_many_images")
    pictures = [images_in.load(url, fetch, param) for url, param in refs.urls]
    return engine.image_prompt(text, refs.marker, pictures)  # type: ignore[attr-defined]


def custom_grammars(req: CreateChatCompletionRequest) -> dict[str, tuple[str, str] | None]:
    """Each custom tool's input grammar (None: free text), checked whatever the tool_choice: a grammar
    that cannot be enforced is a 400."""
    grammars = {}
    for i, tool in enumerate(req.tools or []):
        if isinstance(tool, wire.CustomTool):
            found = tool.grammar()
            if found is not None:
                customtools.check(found, tool.custom.name, param=f"tools[{i}].custom.format.grammar.definition")
            grammars[tool.custom.name] = found
    return grammars


def template_message(message: ChatMessage, index: int, images: ImageRefs | None = None) -> dict[str, Any]:
    """A message as chat templates expect it: text content, `developer` as `system`; with `images`
    (a model that takes them), image parts become its marker."""
    role = {"developer": "system", "function": "tool"}.get(message.role, message.role)
    out: dict[str, Any] = {"role": role, "content": flatten(message, index, images)}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [c.model_dump() for c in message.tool_calls]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def flatten(message: ChatMessage, index: int, images: ImageRefs | None = None) -> str:
    content = message.content
    if content is None:
        return message.refusal or ""
    if isinstance(content, str):
        return content
    texts = []
    for position, part in enumerate(content):
        if isinstance(part, wire.ImagePart) and images is not None:
            images.urls.append((part.image_url.url, f"messages[{index}].content[{position}].image_url.url"))
            texts.append(images.marker)
            continue
        if part.type in NON_TEXT_PARTS:
            kind = NON_TEXT_PARTS[part.type]
            raise InvalidRequestError(f"This model does not accept {kind} input. Send text only, or use a model "
                                      f"that supports {kind} input.", param=f"messages[{index}].content",
                                      code="unsupported_value")
        texts.append(getattr(part, "text", None) or getattr(part, "refusal", ""))
    return "\n".join(texts)


def sampling_params(temperature: float | None, top_p: float | None, seed: int | None,
                    presence_penalty: float | None, frequency_penalty: float | None,
                    logit_bias: dict[str, float] | None, stop: list[str], max_tokens: int | None) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        seed=seed,
        presence_penalty=presence_penalty or 0.0,
        frequency_penalty=frequency_penalty or 0.0,
        logit_bias={int(k): v for k, v in (logit_bias or {}).items()},
        stop=stop,
    )


def output_grammar(req: CreateChatCompletionRequest, tool_choice: str,
                   grammars: dict[str, tuple[str, str] | None]) -> str | None:
    callable_tools = req.callable_tools()
    functions = {t.function.name: t.function.parameters for t in callable_tools if isinstance(t, wire.Tool)}
    customs = [(t.custom.name, grammars[t.custom.name]) for t in callable_tools if isinstance(t, wire.CustomTool)]
    if tool_choice == "required":
        if customs:
            return customtools.required_grammar(list(functions.items()), customs)
        return grammar.required_tool_grammar(list(functions.items()))
    if isinstance(req.tool_choice, wire.NamedCustomToolChoice):
        return customtools.named_grammar(grammars[tool_choice])
    if tool_choice in functions:
        return grammar.named_tool_grammar(functions[tool_choice])
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return grammar.json_grammar(None)
    return grammar.json_grammar(fmt.json_schema.schema_)


def usage_dict(engine: TextEngine, usage: Usage, outputs: list[ChoiceOutput]) -> dict[str, Any]:
    reasoning = sum(len(engine.tokenize(o.reasoning, add_special=False)) for o in outputs if o.reasoning)
    return wire.usage(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, reasoning)


def logprob_entries(delta: TextDelta) -> list[dict[str, Any]]:
    return [wire.token_logprob(lp.token, lp.logprob, lp.bytes, lp.top) for lp in delta.logprobs]


def generate(engine: TextEngine, job: ChatJob, usage: Usage, cancel: threading.Event) -> Any:
    if job.images:  # only an engine with vision made them
        return engine.generate(job.prompt, job.params, job.n, usage, cancel, images=job.images)  # type: ignore[call-arg]
    return engine.generate(job.prompt, job.params, job.n, usage, cancel)


# Non-streaming


def collect(engine: TextEngine, job: ChatJob, usage: Usage, cancel: threading.Event) -> dict[str, Any]:
    """Run the generation to its end and build the chat.completion object (blocking)."""
    outputs = job.outputs()
    finish: dict[int, str] = {}
    logprobs: dict[int, list[dict[str, Any]]] = {i: [] for i in range(job.n)}
    for delta in generate(engine, job, usage, cancel):
        out = outputs[delta.index]
        out.feed(delta.text)
        logprobs[delta.index].extend(logprob_entries(delta))
        if delta.finish_reason:
            out.finish()
            finish[delta.index] = out.finish_reason(delta.finish_reason)
    wanted = job.params.logprobs is not None
    choices = [wire.choice(i, out.message(), finish.get(i, "stop"), logprobs[i] if wanted else None)
               for i, out in enumerate(outputs)]
    req = job.request
    result = wire.completion(job.completion_id, job.created, req.model, job.fingerprint, choices,
                             usage_dict(engine, usage, outputs))
    if req.service_tier:
        result["service_tier"] = "default"  # OpenAI echoes the tier it used when one was asked for
    return result


# Streaming


async def stream(engine: TextEngine, job: ChatJob, usage: Usage,
                 cancel: threading.Event) -> AsyncIterator[dict[str, Any]]:
    """chat.completion.chunk objects exactly in OpenAI's order."""
    outputs = job.outputs()
    wanted = job.params.logprobs is not None
    opened: set[int] = set()
    held: dict[int, list[dict[str, Any]]] = {i: [] for i in range(job.n)}

    def chunk(choices: list[dict[str, Any]], usage_: dict[str, Any] | None = None) -> dict[str, Any]:
        return wire.chunk(job.completion_id, job.created, job.request.model, job.fingerprint, choices, usage_)

    def content_chunk(index: int, delta: dict[str, Any]) -> dict[str, Any]:
        lps = None
        if wanted:
            lps, held[index] = held[index], []
        return chunk([wire.chunk_choice(index, delta, lps)])

    # Called on the loop (building a request takes well under a millisecond, grammar included), so
    # nothing can cancel us between creating the stream and reading it.
    deltas = generate(engine, job, usage, cancel)
    async for delta in read_on_loop(deltas, cancel):
        index, out = delta.index, outputs[delta.index]
        if index not in opened:
            opened.add(index)
            yield chunk([wire.chunk_choice(index, out.opening(), [] if wanted else None)])
        held[index].extend(logprob_entries(delta))
        pieces = out.feed(delta.text) + (out.finish() if delta.finish_reason else [])
        if wanted and held[index] and not pieces and delta.finish_reason:
            pieces = [{"content": ""}]
        for piece in pieces:
            yield content_chunk(index, piece)
        if delta.finish_reason:
            last = wire.chunk_choice(index, {}, None, out.finish_reason(delta.finish_reason))
            if delta.stop_sequence is not None:
                last["stop_reason"] = delta.stop_sequence  # vLLM's extension: which stop string ended it
            yield chunk([last])
    options = job.request.stream_options
    if options is not None and options.include_usage:
        yield chunk([], usage_dict(engine, usage, outputs))


def fingerprint(engine: TextEngine) -> str:
    """`system_fingerprint`: changes when the engine's model or options change."""
    facts = json.dumps(engine.info(), sort_keys=True, default=str)  # type: ignore[attr-defined]
    return "fp_" + hashlib.sha256(facts.encode()).hexdigest()[:10]
