"""The options more than one command takes, defined once: `--json`, the target of `stacklet test` and
`stacklet bench`, and the engine option flags of `serve` and `set`.

Each is a typed Annotated alias; a command declares `as_json: JsonOption = False`. A command that
takes the engine options declares a parameter per flag, named after its EngineOptions field, with
None (False for a switch) as its default, and passes `locals()` to `engine_given` to get the ones
the user typed.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from runtime.options import EngineOptions

JsonOption = Annotated[bool, typer.Option("--json", help="Print the output as JSON (machine-readable).")]
BaseUrlOption = Annotated[str | None, typer.Option(
    "--base-url", help="OpenAI base URL, e.g. http://127.0.0.1:8080/v1 (default: the running stacklet server).")]
ApiKeyOption = Annotated[str | None, typer.Option("--api-key", envvar="STACKLET_API_KEY",
                                                  help="API key for --base-url.")]

NGpuLayersOption = Annotated[str | None, typer.Option("--n-gpu-layers", help="Layers to offload: auto, all or N.")]
MainGpuOption = Annotated[int | None, typer.Option("--main-gpu",
                                                   help="GPU for the model (split-mode none) or scratch.")]
TensorSplitOption = Annotated[str | None, typer.Option("--tensor-split", help="Share per GPU, e.g. 3,1.")]
SplitModeOption = Annotated[str | None, typer.Option("--split-mode", help="none, layer or row.")]
FlashAttnOption = Annotated[str | None, typer.Option("--flash-attn", help="auto, on or off.")]
CtxSizeOption = Annotated[int | None, typer.Option("--ctx-size", help="Context length in tokens.")]
ParallelOption = Annotated[int | None, typer.Option("--parallel", help="Requests one text model serves at once.")]
KvSlotsOption = Annotated[bool, typer.Option(
    "--kv-slots", help="Text: give each of the --parallel requests its own ctx/parallel of the KV cache "
    "(llama-server's slots): faster with several long prompts at once, but no request can use more than its slot.")]
CacheTypeKOption = Annotated[str | None, typer.Option("--cache-type-k", help="KV cache type for K, e.g. f16, q8_0.")]
CacheTypeVOption = Annotated[str | None, typer.Option("--cache-type-v", help="KV cache type for V, e.g. f16, q8_0.")]
ThreadsOption = Annotated[int | None, typer.Option("--threads", help="CPU threads per model.")]
NoMmapOption = Annotated[bool, typer.Option("--no-mmap", help="Read weights into memory instead of mapping them.")]
VaeTilingOption = Annotated[bool, typer.Option("--vae-tiling", help="Images: decode in tiles to save memory.")]
ClipOnCpuOption = Annotated[bool, typer.Option("--clip-on-cpu", help="Images: keep the text encoders on the CPU.")]
VaeOnCpuOption = Annotated[bool, typer.Option("--vae-on-cpu", help="Images: keep the VAE on the CPU.")]
TokenIdsOption = Annotated[str | None, typer.Option(
    "--token-ids", help="Embeddings: read integer inputs as the model's own ids (model) or as OpenAI's (cl100k_base, "
    "what LangChain's OpenAIEmbeddings sends). Default: cl100k_base for OpenAI's embedding model names.")]


def engine_given(values: dict[str, Any]) -> dict[str, Any]:
    """The engine options among a command's arguments that the user set (an unset flag is None or False)."""
    names = EngineOptions.field_names()
    return {name: value for name, value in values.items() if name in names and value is not None and value is not False}
