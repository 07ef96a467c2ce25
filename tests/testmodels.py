"""The real small test models: the ones `stacklet demo` serves (cli/demo_models.py), in the same cache.

`python tests/testmodels.py` installs them all up front; STACKLET_OFFLINE_MODELS moves the cache.
"""

from __future__ import annotations

from pathlib import Path

from cli.demo_models import (
    minilm_gguf,
    minilm_reranker_gguf,
    piper_voice,
    sd15_checkpoint,
    smollm_gguf,
    smollm_mmproj,
    taesd,
    whisper_base_dir,
    whisper_dir,
)

__all__ = [
    "install_all",
    "minilm_gguf",
    "minilm_reranker_gguf",
    "piper_voice",
    "sd15_checkpoint",
    "smollm_gguf",
    "smollm_mmproj",
    "taesd",
    "whisper_base_dir",
    "whisper_dir",
]


def install_all() -> dict[str, Path]:
    return {
        "smollm": smollm_gguf(),
        "smollm_mmproj": smollm_mmproj(),
        "minilm": minilm_gguf(),
        "minilm_reranker": minilm_reranker_gguf(),
        "whisper": whisper_dir(),
        "whisper_base": whisper_base_dir(),
        "piper": piper_voice(),
        "sd15": sd15_checkpoint(),
        "taesd": taesd(),
    }


if __name__ == "__main__":
    for name, path in install_all().items():
        print(f"{name}: {path}")
