"""The real small test models: the same installer the demo uses (cli/offline_models.py)."""

from cli.offline_models import (  # noqa: F401
    install_all,
    minilm_gguf,
    piper_voice,
    sd15_checkpoint,
    smollm_gguf,
    taesd,
    whisper_dir,
)
