"""Whisper on faster-whisper (CTranslate2): transcription and translation, segment by segment."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

from runtime.engines.base import (
    TranscriptionInfo,
    TranscriptionParams,
    TranscriptSegment,
    TranscriptWord,
)
from runtime.errors import EngineError, InvalidRequestError
from runtime.spec import ModelSpec

# temperature 0 means OpenAI's "raise the temperature until the thresholds are met"
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class WhisperEngine:
    def __init__(self, spec: ModelSpec) -> None:
        from faster_whisper import WhisperModel

        self.spec = spec
        self.device = _device(spec)
        # int8 is the fastest CPU type; on a GPU keep the model's own (usually float16)
        self.compute_type = "int8" if self.device == "cpu" else "default"
        model = spec.files["model"]  # the CTranslate2 folder, or its model.bin as the store records it
        folder = model if model.is_dir() else model.parent
        try:
            self._model = WhisperModel(str(folder), device=self.device,
                                       device_index=spec.options.main_gpu or 0, compute_type=self.compute_type,
                                       cpu_threads=spec.options.threads or 0)
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineError(f"Cannot load the Whisper model {spec.name}: {exc}") from exc
        self.multilingual = bool(self._model.model.is_multilingual)
        self.languages: list[str] = list(self._model.supported_languages)
        self.capabilities = frozenset({"transcriptions", "translations"} if self.multilingual
                                      else {"transcriptions"})

    def info(self) -> dict[str, Any]:
        return {"engine": "whisper", "multilingual": self.multilingual, "languages": self.languages,
                "sample_rate": 16000, "device": self.device, "compute_type": self.compute_type,
                "options": self.spec.options.as_dict()}

    def close(self) -> None:
        self._model = None

    def transcribe(self, audio: Any, params: TranscriptionParams,
                   cancel: threading.Event) -> tuple[TranscriptionInfo, Iterator[TranscriptSegment]]:
        self._check(params)
        temperature = FALLBACK_TEMPERATURES if params.temperature == 0 else (params.temperature,)
        segments, info = self._model.transcribe(
            audio, language=params.language, task=params.task, initial_prompt=params.prompt or None,
            temperature=temperature, word_timestamps=params.word_timestamps, vad_filter=params.vad_filter,
        )
        return TranscriptionInfo(language=info.language, duration=info.duration), _convert(segments, cancel)

    def _check(self, params: TranscriptionParams) -> None:
        if params.task == "translate" and not self.multilingual:
            raise InvalidRequestError(f"The model {self.spec.name} is English-only and cannot translate; "
                                      "use a multilingual Whisper model for /audio/translations.",
                                      param="model", code="unsupported_model")
        if params.language and params.language not in self.languages:
            supported = ", ".join(self.languages) if len(self.languages) < 5 else "ISO-639-1 codes"
            raise InvalidRequestError(f"Invalid value: '{params.language}'. Supported values are: {supported}.",
                                      param="language", code="invalid_value")


def _device(spec: ModelSpec) -> str:
    """CUDA when GPU offload is not switched off and CTranslate2 sees a GPU."""
    if spec.options.n_gpu_layers in ("0", 0):
        return "cpu"
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def _convert(segments: Iterable[Any], cancel: threading.Event) -> Iterator[TranscriptSegment]:
    """faster-whisper decodes lazily: each step of this iterator decodes one more segment."""
    for segment in segments:
        words = [TranscriptWord(w.word, float(w.start), float(w.end), float(w.probability))
                 for w in segment.words or []]
        yield TranscriptSegment(
            id=segment.id - 1, start=float(segment.start), end=float(segment.end), text=segment.text,
            tokens=list(segment.tokens), avg_logprob=segment.avg_logprob,
            compression_ratio=segment.compression_ratio, no_speech_prob=segment.no_speech_prob,
            temperature=segment.temperature or 0.0, words=words, seek=segment.seek,
        )
        if cancel.is_set():
            return
