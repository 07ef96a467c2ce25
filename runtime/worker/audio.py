"""Worker routes for audio: /v1/audio/speech on a SpeechEngine, /v1/audio/transcriptions and
/v1/audio/translations on a TranscriptionEngine."""

from __future__ import annotations

import base64
import math
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from runtime import media
from runtime.engines.base import TranscriptionParams, TranscriptSegment
from runtime.errors import InvalidRequestError
from runtime.http.bridge import run_cancellable, stream_in_thread
from runtime.http.jsonbody import JSONBodyRoute
from runtime.http.multipart import form_to_dict
from runtime.http.sse import sse_response
from runtime.http.uploads import read_upload
from runtime.protocol import audio as wire
from runtime.spec import WorkerLimits, worker_path
from runtime.worker.stats import Stats

SPEECH_PATH = worker_path("speech")
TRANSCRIPTIONS_PATH = worker_path("transcriptions")
TRANSLATIONS_PATH = worker_path("translations")


def create_router(engine: Any, stats: Stats, limits: WorkerLimits) -> APIRouter:
    upload_limit = limits.max_upload_bytes
    router = APIRouter(route_class=JSONBodyRoute)
    capabilities = frozenset(engine.capabilities)

    def require(capability: str, what: str) -> None:
        if capability not in capabilities:
            raise InvalidRequestError(f"This model does not support {what}. Use a model that does.",
                                      param="model", code="unsupported_model")

    @router.post(SPEECH_PATH)
    async def create_speech(body: wire.CreateSpeechRequest) -> Response:
        require("speech", "speech")
        body.validate_semantics()
        if body.voice_name not in engine.voices:
            raise InvalidRequestError(f"Invalid value: '{body.voice_name}'. Supported values are: "
                                      + ", ".join(f"'{v}'" for v in engine.voices) + ".",
                                      param="voice", code="invalid_value")
        job = SpeechJob(body.input, body.voice_name, body.speed or 1.0, body.response_format or "mp3")
        cancel = threading.Event()
        chunks = stream_in_thread(lambda: job.encoded(engine, cancel), cancel)
        first = await anext(chunks)  # failures before any audio still get a proper error status
        if body.stream_format == "sse":
            return sse_response(speech_events(stats, job, first, chunks), done=False)
        return StreamingResponse(speech_body(stats, job, first, chunks), media_type=media.CONTENT_TYPES[job.format])

    @router.post(TRANSCRIPTIONS_PATH)
    async def create_transcription(request: Request) -> Response:
        require("transcriptions", "transcriptions")
        async with request.form() as form:
            body = wire.CreateTranscriptionRequest.model_validate(form_to_dict(form))
            data = await read_upload(body.file, upload_limit, "file")
        granularities = body.timestamp_granularities or ["segment"]
        fmt = body.response_format or "json"
        logprobs = "logprobs" in (body.include or []) and (fmt == "json" or bool(body.stream))
        params = TranscriptionParams(
            language=body.language or None, prompt=body.prompt, temperature=body.temperature or 0.0,
            word_timestamps=logprobs or (fmt == "verbose_json" and "word" in granularities),
            vad_filter=body.chunking_strategy is not None,
        )
        audio = await run_in_threadpool(media.decode_audio, data)
        if body.stream:
            return await stream_transcript(stats, engine, audio, params, logprobs)
        return await transcript_response(request, stats, engine, audio, params, fmt, granularities, logprobs,
                                         TRANSCRIPTIONS_PATH)

    @router.post(TRANSLATIONS_PATH)
    async def create_translation(request: Request) -> Response:
        if "transcriptions" in capabilities and "translations" not in capabilities:
            raise InvalidRequestError("This model is English-only and cannot translate. Use a multilingual "
                                      "Whisper model (one without '.en' in its name) for translations.",
                                      param="model", code="unsupported_model")
        require("translations", "translations")
        async with request.form() as form:
            body = wire.CreateTranslationRequest.model_validate(form_to_dict(form))
            data = await read_upload(body.file, upload_limit, "file")
        fmt = body.response_format or "json"
        params = TranscriptionParams(prompt=body.prompt, temperature=body.temperature or 0.0, task="translate")
        audio = await run_in_threadpool(media.decode_audio, data)
        return await transcript_response(request, stats, engine, audio, params, fmt, ["segment"], False,
                                         TRANSLATIONS_PATH)

    return router


# Speech


@dataclass
class SpeechJob:
    text: str
    voice: str
    speed: float
    format: str
    input_tokens: int = 0
    seconds: float = 0.0

    @property
    def output_tokens(self) -> int:
        return math.ceil(self.seconds * wire.AUDIO_TOKENS_PER_SECOND)

    def encoded(self, engine: Any, cancel: threading.Event) -> Iterator[bytes]:
        """Synthesise sentence by sentence and encode as it goes (blocking; runs in a thread)."""
        encoder = None
        for chunk in engine.synthesize(self.text, self.voice, self.speed, cancel):
            encoder = encoder or media.AudioEncoder(self.format, chunk.sample_rate)
            self.input_tokens += chunk.input_tokens
            self.seconds += len(chunk.samples) / chunk.sample_rate
            yield encoder.encode(chunk.samples)
        encoder = encoder or media.AudioEncoder(self.format, media.SPEECH_RATE)
        yield encoder.finish()


async def speech_body(stats: Stats, job: SpeechJob, first: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for data in _prepend(first, chunks):
        if data:
            yield data
    stats.record(SPEECH_PATH, job.input_tokens, job.output_tokens)


async def speech_events(stats: Stats, job: SpeechJob, first: bytes,
                        chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    async for data in _prepend(first, chunks):
        if data:
            yield wire.speech_delta_event(base64.b64encode(data).decode())
    stats.record(SPEECH_PATH, job.input_tokens, job.output_tokens)
    yield wire.speech_done_event(job.input_tokens, job.output_tokens)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for item in rest:
        yield item


# Transcriptions and translations


def _logprobs(segments: list[TranscriptSegment]) -> list[dict[str, Any]]:
    """Whisper scores words, not single tokens: one entry per word, its probability as a log."""
    return [wire.token_logprob(w.word, math.log(max(w.probability, 1e-12))) for s in segments for w in s.words]


def _output_tokens(segments: list[TranscriptSegment]) -> int:
    return sum(len(s.tokens) for s in segments)


async def transcript_response(request: Request, stats: Stats, engine: Any, audio: Any, params: TranscriptionParams,
                              fmt: str, granularities: list[str], logprobs: bool, path: str) -> Response:
    cancel = threading.Event()

    def run() -> tuple[Any, list[TranscriptSegment]]:
        info, segments = engine.transcribe(audio, params, cancel)
        return info, list(segments)

    info, segments = await run_cancellable(request, run, cancel)
    stats.record(path, 0, _output_tokens(segments))
    text = wire.transcript_text(segments)
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt == "srt":
        return PlainTextResponse(wire.format_srt(segments))
    if fmt == "vtt":
        return PlainTextResponse(wire.format_vtt(segments))
    if fmt == "verbose_json":
        language = "en" if params.task == "translate" else info.language
        return JSONResponse(wire.transcription_verbose_json(params.task, language, info.duration, segments,
                                                            granularities))
    return JSONResponse(wire.transcription_json(text, info.duration, _logprobs(segments) if logprobs else None))


async def stream_transcript(stats: Stats, engine: Any, audio: Any, params: TranscriptionParams,
                            logprobs: bool) -> Response:
    cancel = threading.Event()
    info, segments = await run_in_threadpool(engine.transcribe, audio, params, cancel)

    async def events() -> AsyncIterator[dict[str, Any]]:
        done: list[TranscriptSegment] = []
        async for segment in stream_in_thread(lambda: segments, cancel):
            delta = segment.text if done else segment.text.lstrip()
            done.append(segment)
            yield wire.text_delta_event(delta, _logprobs([segment]) if logprobs else None)
        stats.record(TRANSCRIPTIONS_PATH, 0, _output_tokens(done))
        usage = wire.token_usage(info.duration, _output_tokens(done))
        yield wire.text_done_event(wire.transcript_text(done), _logprobs(done) if logprobs else None, usage)

    return sse_response(events(), done=False)
