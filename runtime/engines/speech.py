"""Piper voices on onnxruntime: text -> espeak-ng phonemes -> VITS audio, sentence by sentence.

Phonemes come from the espeak-ng library that the `espeakng-loader` wheel ships, called through
ctypes (espeak-ng itself is GPL-3.0; see the README). espeak-ng splits the text into clauses;
the punctuation that ended each clause is put back as a phoneme, as Piper was trained, and a
sentence ends at `.`, `?` or `!`.
"""

from __future__ import annotations

import ctypes
import functools
import json
import threading
import unicodedata
from collections.abc import Iterator
from typing import Any

import numpy as np

from runtime.engines.base import SpeechChunk
from runtime.errors import EngineError, InvalidRequestError
from runtime.spec import ModelSpec

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
                 "verse", "marin", "cedar")
_BOS, _EOS, _PAD = "^", "$", "_"
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_SENTENCE_ENDS = {".": ".", "?": "?", "!": "!", "…": "."}
_CLAUSE_ENDS = (",", ";", ":")
_CLOSERS = "\"'”’»)]} \t\r\n"
MAX_PHONEMES = 400  # per model call
_TITLES = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "mt", "vs"}
# espeak-ng keeps its voice and buffers in process-wide globals: one caller at a time
_ESPEAK_LOCK = threading.Lock()


@functools.cache
def _espeak() -> Any:
    """Load and initialise the bundled libespeak-ng once per process."""
    try:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
    except (ImportError, OSError) as exc:
        raise EngineError(f"espeak-ng is not available ({exc}); run `pip install espeakng-loader`.") from exc
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    synchronous_output = 0x02
    if lib.espeak_Initialize(synchronous_output, 0, espeakng_loader.get_data_path().encode(), 0) < 0:
        raise EngineError("espeak-ng failed to initialise.")
    return lib


def phonemize(text: str, espeak_voice: str) -> list[str]:
    """IPA phonemes of `text`, one string per sentence, clause punctuation kept."""
    lib = _espeak()
    raw = text.replace("\x00", " ").encode()
    buffer = ctypes.create_string_buffer(raw)
    base = ctypes.addressof(buffer)
    pointer = ctypes.c_void_p(base)
    sentences, current, start = [], "", 0
    with _ESPEAK_LOCK:
        if lib.espeak_SetVoiceByName(espeak_voice.encode()) != 0:
            raise EngineError(f"espeak-ng has no voice '{espeak_voice}'.")
        while pointer.value:
            phonemes = (lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA) or b"").decode()
            end = pointer.value - base if pointer.value else len(raw)
            clause = raw[start:end].decode(errors="ignore")
            if pointer.value:  # espeak has read one character into the next clause
                start = end - len(clause[-1:].encode())
                clause = clause[:-1]
            mark = _clause_mark(clause)
            if mark in _SENTENCE_ENDS:
                sentences.append(current + phonemes + _SENTENCE_ENDS[mark])
                current = ""
            else:
                current += phonemes + (mark if mark in _CLAUSE_ENDS else "") + " "
    if current.strip():
        sentences.append(current.rstrip())
    return [part for s in sentences if s.strip(" .?!") for part in _split_long(s)]


def _clause_mark(clause: str) -> str:
    """The punctuation that ended a clause; none after a title such as "Dr.", which espeak also breaks at."""
    stripped = clause.rstrip(_CLOSERS)
    words = stripped.split()
    if stripped.endswith(".") and words and words[-1].lower().rstrip(".") in _TITLES:
        return ""
    return stripped[-1:]


def _split_long(sentence: str) -> list[str]:
    """Cut run-on text at word breaks: one model call per piece bounds memory and time to first audio."""
    parts = []
    while len(sentence) > MAX_PHONEMES:
        cut = sentence.rfind(" ", 0, MAX_PHONEMES)
        cut = cut if cut > 0 else MAX_PHONEMES
        parts.append(sentence[:cut])
        sentence = sentence[cut:].lstrip()
    return [*parts, sentence]


class PiperEngine:
    capabilities = frozenset({"speech"})

    def __init__(self, spec: ModelSpec) -> None:
        import onnxruntime

        self.spec = spec
        try:
            self.config = json.loads(spec.files["config"].read_text())
        except (KeyError, OSError, ValueError) as exc:
            raise EngineError(f"Cannot read the Piper voice config (.onnx.json) of {spec.name}: {exc}") from exc
        if self.config.get("phoneme_type", "espeak") != "espeak":
            raise EngineError(f"Unsupported Piper phoneme type '{self.config['phoneme_type']}'; "
                              "only espeak voices are supported.")
        self.sample_rate = int(self.config["audio"]["sample_rate"])
        self.espeak_voice = self.config.get("espeak", {}).get("voice", "en-us")
        self._id_map: dict[str, list[int]] = self.config["phoneme_id_map"]
        self._speakers = self._speaker_ids()
        self.voices = [*self._speakers, *(v for v in OPENAI_VOICES if v not in self._speakers)]
        options = onnxruntime.SessionOptions()
        if spec.options.threads:
            options.intra_op_num_threads = spec.options.threads
        try:
            self._session = onnxruntime.InferenceSession(str(spec.files["model"]), options,
                                                         providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise EngineError(f"Cannot load the Piper voice {spec.name}: {exc}") from exc
        self._has_speaker_input = any(i.name == "sid" for i in self._session.get_inputs())
        _espeak()  # fail at load, not on the first request

    def _speaker_ids(self) -> dict[str, int]:
        """Speaker name -> id; a single-speaker voice is named after its dataset."""
        named = {str(name): int(sid) for name, sid in (self.config.get("speaker_id_map") or {}).items()}
        return named or {str(self.config.get("dataset") or "default"): 0}

    def speaker_id(self, voice: str | None) -> int:
        """OpenAI voice names are spread over the voice's speakers in order."""
        if voice is None:
            return 0
        if voice in self._speakers:
            return self._speakers[voice]
        if voice in OPENAI_VOICES:
            return sorted(self._speakers.values())[OPENAI_VOICES.index(voice) % len(self._speakers)]
        raise InvalidRequestError(f"Invalid value: '{voice}'. Supported values are: "
                                  + ", ".join(f"'{v}'" for v in self.voices) + ".",
                                  param="voice", code="invalid_value")

    def info(self) -> dict[str, Any]:
        language = self.config.get("language", {}).get("code") or self.espeak_voice
        return {"engine": "piper", "voices": self.voices, "speakers": list(self._speakers),
                "language": language, "sample_rate": self.sample_rate,
                "options": self.spec.options.as_dict()}

    def close(self) -> None:
        self._session = None

    def synthesize(self, text: str, voice: str | None, speed: float,
                   cancel: threading.Event) -> Iterator[SpeechChunk]:
        speaker = self.speaker_id(voice)  # unknown voices fail here, before any audio
        return self._sentences(text, speaker, speed, cancel)

    def _sentences(self, text: str, speaker: int, speed: float, cancel: threading.Event) -> Iterator[SpeechChunk]:
        for phonemes in phonemize(text, self.espeak_voice):
            if cancel.is_set():
                return
            ids = self._phoneme_ids(phonemes)
            yield SpeechChunk(self._infer(ids, speaker, speed), self.sample_rate, input_tokens=len(ids))

    def _phoneme_ids(self, phonemes: str) -> list[int]:
        ids = [*self._id_map[_BOS], *self._id_map[_PAD]]
        for phoneme in unicodedata.normalize("NFD", phonemes):
            if phoneme in self._id_map:
                ids += [*self._id_map[phoneme], *self._id_map[_PAD]]
        return ids + self._id_map[_EOS]

    def _infer(self, ids: list[int], speaker: int, speed: float) -> np.ndarray:
        inference = self.config.get("inference", {})
        scales = [inference.get("noise_scale", 0.667), inference.get("length_scale", 1.0) / speed,
                  inference.get("noise_w", 0.8)]
        inputs: dict[str, np.ndarray] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array(scales, dtype=np.float32),
        }
        if self._has_speaker_input:
            inputs["sid"] = np.array([speaker], dtype=np.int64)
        audio = self._session.run(None, inputs)[0].reshape(-1)
        return np.clip(audio * 32767, -32768, 32767).astype(np.int16)
