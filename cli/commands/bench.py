"""`stacklet bench`: a load generator for stacklet or any OpenAI-compatible server.

Streams chat completions at each concurrency level and reports aggregate and per-stream
tokens/s, time to first token, errors and tokens completed versus requested; then the time to
first token for a long shared prefix, cold versus warm; then embeddings throughput when the
model embeds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import typer

from cli import output
from cli.client import OPENAI_TIMEOUT_S, openai_target
from cli.options import ApiKeyOption, BaseUrlOption, JsonOption
from runtime.errors import InvalidRequestError

FILLER = ("The old lighthouse keeper walked along the rocky shore and watched the grey waves roll in "
          "from the sea while gulls circled above the harbour and the fishing boats came home. ")
PREFIX_TOKENS = 1000
EMBED_INPUTS = 256


@dataclass
class Stream:
    ok: bool = False
    ttft_s: float = 0.0
    total_s: float = 0.0
    tokens: int = 0
    error: str = ""


@dataclass
class Level:
    concurrency: int
    requests: int
    errors: int
    tokens: int
    requested_tokens: int
    wall_s: float
    aggregate_tok_s: float
    stream_tok_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    error_sample: str = ""


@dataclass
class BenchResult:
    base_url: str
    model: str
    levels: list[Level] = field(default_factory=list)
    prefix: dict[str, float] = field(default_factory=dict)
    embeddings: dict[str, float] = field(default_factory=dict)


def bench(
    model: str | None = typer.Argument(None, help="Model to benchmark (default: the server's first model)."),
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    concurrency: str = typer.Option("1,2,4,8,16", "--concurrency", help="Comma-separated concurrency levels."),
    max_tokens: int = typer.Option(128, "--max-tokens", min=1, help="Tokens to generate per request."),
    prompt_tokens: int = typer.Option(64, "--prompt-tokens", min=8, help="Approximate prompt length."),
    requests_per_level: int = typer.Option(0, "--requests-per-level", min=0,
                                           help="Requests per level (default: twice the concurrency)."),
    as_json: JsonOption = False,
) -> None:
    """Measure tokens/s, time to first token and prefix reuse under concurrent streaming load."""
    levels = _levels(concurrency)
    base_url, api_key = openai_target(base_url, api_key)
    result = asyncio.run(_run(base_url.rstrip("/"), api_key, model, levels, max_tokens, prompt_tokens,
                              requests_per_level))
    if as_json:
        output.print_json(asdict(result))
    else:
        _print(result, max_tokens)


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise InvalidRequestError("--concurrency takes positive integers separated by commas, e.g. 1,2,4,8.")
    return levels


async def _run(base_url: str, api_key: str | None, model: str | None, levels: list[int], max_tokens: int,
               prompt_tokens: int, per_level: int) -> BenchResult:
    import httpx

    headers = {"Authorization": f"Bearer {api_key or 'none'}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=OPENAI_TIMEOUT_S,
                                 limits=httpx.Limits(max_connections=max(levels) + 8)) as client:
        model = model or await _first_model(client)
        result = BenchResult(base_url, model)
        if (await _stream(client, model, "Say hi.", 1)).ok:
            await _stream(client, model, _prompt("warm-up", prompt_tokens), 8)  # load, warm caches
            for level in levels:
                result.levels.append(await _level(client, model, level, per_level or 2 * level,
                                                  max_tokens, prompt_tokens))
            result.prefix = await _prefix(client, model)
        result.embeddings = await _embeddings(client, model)
    return result


async def _first_model(client: Any) -> str:
    response = await client.get("/models")
    response.raise_for_status()
    models = response.json().get("data") or []
    if not models:
        raise InvalidRequestError("The server lists no models; name one: stacklet bench MODEL.")
    return models[0]["id"]


def _prompt(tag: str, tokens: int, question: str = "Write a long story about the sea.") -> str:
    """A prompt of roughly `tokens` tokens that starts with `tag`, so prompts share no prefix."""
    words = FILLER.split()
    body = " ".join(words[i % len(words)] for i in range(max(tokens - 24, 0)))
    return f"[{tag}] {body}\n\n{question}"


async def _stream(client: Any, model: str, prompt: str, max_tokens: int) -> Stream:
    """One streamed chat completion; tokens from the usage chunk, or one per content chunk."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.7, "stream": True, "stream_options": {"include_usage": True}}
    stream, chunks, start = Stream(), 0, time.perf_counter()
    try:
        async with client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code != 200:
                stream.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return stream
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    stream.error = str(event["error"])[:200]
                    return stream
                if event.get("usage"):
                    stream.tokens = event["usage"].get("completion_tokens", 0)
                for choice in event.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        chunks += 1
                        stream.ttft_s = stream.ttft_s or time.perf_counter() - start
    except Exception as exc:  # a benchmark counts failures, it never crashes
        stream.error = f"{type(exc).__name__}: {exc}"[:200]
        return stream
    stream.total_s = time.perf_counter() - start
    stream.tokens = stream.tokens or chunks
    stream.ok = True
    return stream


async def _level(client: Any, model: str, concurrency: int, count: int, max_tokens: int,
                 prompt_tokens: int) -> Level:
    gate = asyncio.Semaphore(concurrency)
    run_id = uuid.uuid4().hex[:8]

    async def one(index: int) -> Stream:
        async with gate:
            return await _stream(client, model, _prompt(f"{run_id}-{index}", prompt_tokens), max_tokens)

    start = time.perf_counter()
    streams = await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.perf_counter() - start
    done = [s for s in streams if s.ok]
    tokens = sum(s.tokens for s in done)
    ttfts = sorted(s.ttft_s for s in done)
    rates = [(s.tokens - 1) / (s.total_s - s.ttft_s) for s in done if s.tokens > 1 and s.total_s > s.ttft_s]
    errors = [s.error for s in streams if not s.ok]
    return Level(concurrency, count, len(errors), tokens, count * max_tokens, wall, tokens / wall,
                 statistics.mean(rates) if rates else 0.0, _percentile(ttfts, 50), _percentile(ttfts, 99),
                 errors[0] if errors else "")


async def _prefix(client: Any, model: str) -> dict[str, float]:
    """Time to first token for ~1000-token prefixes: first sight, again, with four users taking turns,
    and with two follow-ups from each of the four users arriving at once."""
    async def ttft(prefix: str, question: str) -> float:
        return (await _stream(client, model, prefix + question, 4)).ttft_s

    users = [_prompt(uuid.uuid4().hex, PREFIX_TOKENS, "") for _ in range(4)]
    cold = await ttft(users[0], "Who keeps the lighthouse?")
    warm = statistics.median([await ttft(users[0], f"Question {i}: what do the gulls do?") for i in range(3)])
    for prefix in users[1:]:
        await ttft(prefix, "Who keeps the lighthouse?")
    turns = statistics.median([await ttft(users[i % 4], f"Turn {i}?") for i in range(8)])
    together = statistics.median(await asyncio.gather(*(ttft(users[i % 4], f"Follow-up {i}?") for i in range(8))))
    return {"cold_ttft_s": cold, "warm_ttft_s": warm, "warm_ttft_4_users_s": turns,
            "warm_ttft_8_at_once_s": together, "warm_over_cold": warm / cold if cold else 0.0,
            "4_users_over_cold": turns / cold if cold else 0.0}


async def _embeddings(client: Any, model: str) -> dict[str, float]:
    """Inputs/s for one request of 256 short inputs (best of three); empty if the model does not embed."""
    import httpx

    inputs = [f"Sentence {i} about the lighthouse by the sea." for i in range(EMBED_INPUTS)]
    try:
        probe = await client.post("/embeddings", json={"model": model, "input": inputs[:1]})
    except httpx.HTTPError:  # some servers drop the connection for endpoints they do not serve
        return {}
    if probe.status_code != 200:
        return {}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        response = await client.post("/embeddings", json={"model": model, "input": inputs})
        response.raise_for_status()
        times.append(time.perf_counter() - start)
    return {"inputs": EMBED_INPUTS, "seconds": min(times), "inputs_per_s": EMBED_INPUTS / min(times)}


def _percentile(values: list[float], pct: int) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, round(pct / 100 * len(values) + 0.5) - 1))]


def _print(result: BenchResult, max_tokens: int) -> None:
    title = f"{result.model} at {result.base_url}"
    if result.levels:
        rows = [[lv.concurrency, f"{lv.requests - lv.errors}/{lv.requests}", f"{lv.tokens}/{lv.requested_tokens}",
                 f"{lv.aggregate_tok_s:.1f}", f"{lv.stream_tok_s:.1f}", f"{lv.ttft_p50_s:.3f}",
                 f"{lv.ttft_p99_s:.3f}", lv.error_sample] for lv in result.levels]
        output.table(["concurrency", "ok", "tokens", "tok/s", "tok/s per stream", "ttft p50 s", "ttft p99 s",
                      "error"], rows, title=f"{title}: {max_tokens} tokens per request")
    if result.prefix:
        p = result.prefix
        output.table(["cold ttft s", "warm ttft s", "warm, 4 users taking turns s", "warm, 8 at once s",
                      "warm / cold", "4 users / cold"],
                     [[f"{p['cold_ttft_s']:.3f}", f"{p['warm_ttft_s']:.3f}", f"{p['warm_ttft_4_users_s']:.3f}",
                       f"{p['warm_ttft_8_at_once_s']:.3f}", f"{p['warm_over_cold']:.2f}",
                       f"{p['4_users_over_cold']:.2f}"]], title=f"{PREFIX_TOKENS}-token prefixes")
    if result.embeddings:
        e = result.embeddings
        output.table(["inputs", "seconds", "inputs/s"], [[e["inputs"], f"{e['seconds']:.3f}",
                                                          f"{e['inputs_per_s']:.1f}"]], title="embeddings")
    if not result.levels and not result.embeddings:
        output.error(f"{result.model} answered neither chat completions nor embeddings.")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
