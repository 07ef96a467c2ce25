"""`stacklet search`: Hugging Face or ModelScope repos with files stacklet can pull, their quants and sizes.

The hub's model search (repo names containing the query, most downloaded first; on Hugging Face only those
with the tag the kind's files carry), then each repo's file list, read as a pull would read it
(runtime.store.selection).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import FileNotInRepoError, InvalidRequestError, StackletError
from runtime.store import selection
from runtime.store.hub import Hub, RepoListing

if TYPE_CHECKING:
    from runtime.store.modelscope import ModelScope

# The hub tag that repos of each kind's files carry.
TAGS = {"llm": "gguf", "embedding": "gguf", "rerank": "gguf", "image": "text-to-image", "speech": "onnx",
        "transcription": "ctranslate2"}
MAX_RESULTS = 50  # each result costs one more request (its file list)
# What a pull of each kind takes (`summarise`'s format): on ModelScope, which searches by name alone, the kind.
FORMATS = {"llm": {"gguf"}, "embedding": {"gguf"}, "rerank": {"gguf"}, "image": {"diffusion", "gguf"},
           "speech": {"piper"}, "transcription": {"whisper"}}
PULL_PREFIXES = {"hf": "hf.co", "ms": "modelscope.cn"}


def search(models_dir: Path, query: str, kind: str = "llm", limit: int = 10, token: str | None = None,
           endpoint: str | None = None, hub: str = "huggingface") -> list[dict[str, Any]]:
    """[{repo, downloads, format, quants: [{quant, size}], size, pull}] for the repos that have model files."""
    if not query.strip() or len(query) > 200:
        raise InvalidRequestError("Give a search word of 1 to 200 characters, e.g. stacklet search SmolLM2.")
    if kind not in TAGS:
        raise InvalidRequestError(f"Unknown kind {kind[:32]!r}: use one of {', '.join(TAGS)}.", param="kind")
    if not 1 <= limit <= MAX_RESULTS:
        raise InvalidRequestError(f"--limit takes 1 to {MAX_RESULTS}.", param="limit")
    if hub not in selection.HUBS:
        raise InvalidRequestError(f"Unknown hub {hub[:32]!r}: use {' or '.join(selection.HUBS)}.", param="hub")
    source = selection.HUBS[hub]
    client: Hub | ModelScope
    if source == "ms":
        from runtime.store.modelscope import ModelScope  # not on the CLI's start-up path, which reads TAGS

        client = ModelScope(models_dir, token=token, endpoint=endpoint)
        repos = client.search(query.strip(), limit)
    else:
        client = Hub(models_dir, token=token, endpoint=endpoint)
        repos = client.search(query.strip(), TAGS[kind], limit)
    found = []
    for repo, downloads in repos:
        try:
            summary = summarise(client.list_files(repo), PULL_PREFIXES[source])
        except StackletError:  # gated, gone since the search, or an answer that cannot be right: not listed
            continue
        if summary is not None and summary["format"] in FORMATS[kind]:
            found.append({"repo": repo, "downloads": downloads, **summary})
    return found


def summarise(listing: RepoListing, prefix: str) -> dict[str, Any] | None:
    """What a repo offers: GGUF quants with their sizes, or the one model a pull would take (None: nothing);
    `prefix` is the hub's in the `pull` source."""
    paths = sorted(listing.files)
    groups = selection.quant_groups(paths)
    if groups:
        quants = sorted(({"quant": quant or "(unlabelled)", "size": sum(listing.files[p].size for p in group)}
                         for quant, group in groups.items()), key=lambda q: (q["size"], q["quant"]))
        return {"format": "gguf", "quants": quants, "size": None, "pull": f"{prefix}/{listing.repo}"}
    try:
        chosen = selection.select(paths)
    except FileNotInRepoError:  # a collection (voices, checkpoints): a pull chooses one with --file
        voices = [p for p in paths if p.endswith(".onnx") and p + ".json" in listing.files]
        checkpoints = [p for p in paths if p.lower().endswith(selection.DIFFUSION_SUFFIXES)]
        form, files = ("piper", voices) if voices else ("diffusion", checkpoints)
        if not files:
            return None
        return {"format": form, "quants": [], "size": sum(listing.files[p].size for p in files),
                "pull": f"{prefix}/{listing.repo} --file NAME ({len(files)} to choose from)"}
    model = chosen[0].path
    form = "whisper" if model.endswith("model.bin") else "piper" if model.endswith(".onnx") else "diffusion"
    return {"format": form, "quants": [], "size": sum(listing.files[s.path].size for s in chosen),
            "pull": f"{prefix}/{listing.repo}"}
