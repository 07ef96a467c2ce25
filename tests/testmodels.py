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

if __name__ == "__main__":
    for name, path in install_all().items():
        print(f"{name}: {path}")
