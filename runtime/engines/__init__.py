"""Engines: one per model format. `load_engine` imports only the one a spec needs."""

from __future__ import annotations

import importlib
from typing import Any

from runtime.errors import InvalidRequestError
from runtime.spec import ModelSpec

ENGINES = {
    "llama": ("runtime.engines.llama.engine", "LlamaEngine"),
    "diffusion": ("runtime.engines.diffusion", "DiffusionEngine"),
    "piper": ("runtime.engines.speech", "PiperEngine"),
    "whisper": ("runtime.engines.transcribe", "WhisperEngine"),
    "fake": ("runtime.engines.fake", "FakeEngine"),
}


def load_engine(spec: ModelSpec) -> Any:
    """Construct (and so load) the engine named by `spec.engine`."""
    if spec.engine not in ENGINES:
        raise InvalidRequestError(f"Unknown engine '{spec.engine}'. Known: {', '.join(ENGINES)}.")
    module_name, class_name = ENGINES[spec.engine]
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(spec)
