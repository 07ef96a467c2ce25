"""The engine option flags, defined once for every command that takes them (`serve`, `set`).

A command declares a parameter per flag, named after its EngineOptions field, with these as
defaults, and passes `locals()` to `given` to get the ones the user typed.
"""

from __future__ import annotations

from typing import Any

import typer

from runtime.engines.options import EngineOptions

NGpuLayersOption = typer.Option(None, "--n-gpu-layers", help="Layers to offload: auto, all or N.")
MainGpuOption = typer.Option(None, "--main-gpu", help="GPU for the model (split-mode none) or scratch.")
TensorSplitOption = typer.Option(None, "--tensor-split", help="Share per GPU, e.g. 3,1.")
SplitModeOption = typer.Option(None, "--split-mode", help="none, layer or row.")
FlashAttnOption = typer.Option(None, "--flash-attn", help="auto, on or off.")
CtxSizeOption = typer.Option(None, "--ctx-size", help="Context length in tokens.")
ParallelOption = typer.Option(None, "--parallel", help="Requests one text model serves at once.")
CacheTypeKOption = typer.Option(None, "--cache-type-k", help="KV cache type for K, e.g. f16, q8_0.")
CacheTypeVOption = typer.Option(None, "--cache-type-v", help="KV cache type for V, e.g. f16, q8_0.")
ThreadsOption = typer.Option(None, "--threads", help="CPU threads per model.")
NoMmapOption = typer.Option(False, "--no-mmap", help="Read weights into memory instead of mapping them.")
VaeTilingOption = typer.Option(False, "--vae-tiling", help="Images: decode in tiles to save memory.")
ClipOnCpuOption = typer.Option(False, "--clip-on-cpu", help="Images: keep the text encoders on the CPU.")
VaeOnCpuOption = typer.Option(False, "--vae-on-cpu", help="Images: keep the VAE on the CPU.")


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The engine options among a command's arguments that the user set (an unset flag is None or False)."""
    names = EngineOptions.field_names()
    return {name: value for name, value in values.items() if name in names and value is not None and value is not False}
