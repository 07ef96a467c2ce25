"""Which files of a repo (or local directory) make up a model, and what to call it.

Pure functions over file paths, shared by hub pulls and local imports.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from runtime.errors import FileNotInRepoError, InvalidRequestError

# Where sizes are not weighed against memory (a local folder, --file globs that match several quants): Q4_K_M
# first, then the nearest: similar size and quality, then bigger, then smaller. Hub pulls choose with fit.py.
QUANT_PREFERENCE = (
    "Q4_K_M", "Q4_K_S", "Q4_K_L", "IQ4_XS", "IQ4_NL", "Q4_0", "Q4_1", "Q5_K_M", "Q5_K_S", "Q5_0", "Q5_1",
    "Q6_K", "Q6_K_L", "Q3_K_L", "Q3_K_M", "IQ3_M", "Q8_0", "Q3_K_S", "IQ3_XS", "Q2_K", "Q2_K_L", "IQ2_M",
    "BF16", "F16", "F32",
)
_QUANT_RE = re.compile(r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE)
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json")
DIFFUSION_SUFFIXES = (".safetensors", ".ckpt", ".gguf", ".sft")


HUBS = {"huggingface": "hf", "modelscope": "ms"}  # STACKLET_HUB (or `hub` in the config) -> source type
_HUB_PREFIXES = (("hf.co/", "hf"), ("huggingface.co/", "hf"), ("ms://", "ms"), ("www.modelscope.cn/models/", "ms"),
                 ("modelscope.cn/models/", "ms"), ("www.modelscope.cn/", "ms"), ("modelscope.cn/", "ms"))


@dataclass(frozen=True)
class Source:
    """A parsed pull source: a Hugging Face or ModelScope repo (optionally with a quant), or a local path."""

    type: str  # "hf", "ms" or "local"
    repo: str = ""
    quant: str | None = None
    path: str = ""


@dataclass(frozen=True)
class Selected:
    role: str  # "model", "shard", "mmproj", "config", "tokenizer", "vocabulary", "vae", "taesd"
    path: str  # repo-relative, POSIX separators


def parse_repo(text: str, default_hub: str = "huggingface") -> Source:
    """`hf.co/owner/repo:QUANT`, `modelscope.cn/owner/repo:QUANT`, `ms://owner/repo`, or `owner/repo[:QUANT]`
    on the default hub (also as https:// URLs)."""
    if default_hub not in HUBS:
        raise InvalidRequestError(f"Unknown hub {default_hub[:32]!r} in STACKLET_HUB or the config's `hub`: use "
                                  f"{' or '.join(HUBS)}.", param="source")
    repo, hub = text.strip(), HUBS[default_hub]
    for prefix in ("https://", "http://"):
        repo = repo.removeprefix(prefix)
    for prefix, named in _HUB_PREFIXES:
        if repo.startswith(prefix):
            repo, hub = repo.removeprefix(prefix), named
            break
    quant = None
    if ":" in repo:
        repo, quant = repo.rsplit(":", 1)
        quant = quant.strip() or None
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise InvalidRequestError(
            f"'{text}' is neither an existing path nor a hub repo. Use owner/repo[:QUANT] (hf.co/..., "
            "modelscope.cn/... or ms://...) or a file path.",
            param="source",
        )
    return Source(hub, repo=repo, quant=quant)


def default_name(source: Source, selected: list[Selected]) -> str:
    """A short model name: the repo name without a -GGUF suffix, or the local file's stem."""
    if source.type in ("hf", "ms"):
        base = source.repo.split("/")[-1]
    else:
        base = PurePosixPath(source.path.rstrip("/")).name
        base = base.removesuffix(".gguf").removesuffix(".onnx")
    base = re.sub(r"[-_.]GGUF$", "", base, flags=re.IGNORECASE)
    if source.type == "local":
        base = re.sub(r"[-_.]" + _QUANT_RE.pattern + "$", "", base, flags=re.IGNORECASE)
    return base or PurePosixPath(selected[0].path).stem


def local_patterns(filename: str) -> list[str]:
    """The glob that picks a local file with its shards (a Piper voice's .onnx.json is added by select)."""
    shard = _SHARD_RE.search(filename)
    if shard:
        return [filename[: shard.start()] + f"-*-of-{shard.group(2)}.gguf"]
    return [filename]


def quant_of(path: str) -> str | None:
    matches = _QUANT_RE.findall(_SHARD_RE.sub(".gguf", path))
    return matches[-1].upper() if matches else None


def select(paths: list[str], quant: str | None = None, patterns: list[str] | None = None) -> list[Selected]:
    """The files a model needs, with their roles; raises FileNotInRepoError with what is available."""
    if patterns:
        return _select_patterns(paths, patterns)
    ggufs = [p for p in paths if p.lower().endswith(".gguf")]
    if ggufs:
        return _select_gguf(ggufs, quant)
    if quant:
        raise FileNotInRepoError(f"Quant {quant} asked for, but the repo has no GGUF files.", param="quant")
    names = {PurePosixPath(p).name: p for p in paths}
    if "model.bin" in names and "config.json" in names:
        return _select_whisper(names)
    voices = [p for p in paths if p.endswith(".onnx") and p + ".json" in paths]
    if len(voices) == 1:
        return [Selected("model", voices[0]), Selected("config", voices[0] + ".json")]
    candidates = voices or [p for p in paths if p.lower().endswith(DIFFUSION_SUFFIXES)]
    if len(candidates) == 1:
        return [Selected("model", candidates[0])]
    if candidates:
        raise FileNotInRepoError(
            f"Several model files: {_listing(candidates)}. Choose one with --file.", param="file"
        )
    raise FileNotInRepoError(
        "No model files found (GGUF, Whisper CTranslate2, Piper .onnx, or a diffusion checkpoint). "
        f"Files: {_listing(paths)}.",
        param="file",
    )


def _select_gguf(ggufs: list[str], quant: str | None) -> list[Selected]:
    projectors = [p for p in ggufs if "mmproj" in p.lower()]
    weights = [p for p in ggufs if p not in projectors]
    if not weights:
        raise FileNotInRepoError("The repo only has mmproj files, no model weights.", param="quant")
    by_quant = quant_groups(weights)
    chosen = _choose_quant(by_quant, quant)
    selected = [Selected("model" if i == 0 else "shard", p) for i, p in enumerate(by_quant[chosen])]
    if projectors:
        selected.append(Selected("mmproj", _pick_projector(projectors, chosen)))
    return selected


def quant_groups(paths: list[str]) -> dict[str, list[str]]:
    """The weight files of each quant among `paths` (one model, with its shards; "" for unlabelled files)."""
    by_quant: dict[str, list[str]] = {}
    for path in paths:
        if path.lower().endswith(".gguf") and "mmproj" not in path.lower():
            by_quant.setdefault(quant_of(path) or "", []).append(path)
    return {quant: _one_model(sorted(group)) for quant, group in by_quant.items()}


def _choose_quant(by_quant: dict[str, list[str]], asked: str | None) -> str:
    if asked:
        if asked.upper() in by_quant:
            return asked.upper()
        available = ", ".join(sorted(q for q in by_quant if q)) or "none labelled"
        raise FileNotInRepoError(
            f"Quant {asked} is not in this repo. Available: {available}.", param="quant"
        )
    if len(by_quant) == 1:
        return next(iter(by_quant))
    for candidate in QUANT_PREFERENCE:
        if candidate in by_quant:
            return candidate
    return sorted(by_quant)[0]


def _one_model(paths: list[str]) -> list[str]:
    """One quant can still hold several models (or a sharded set): keep the first, with all its shards."""
    first = paths[0]
    shard = _SHARD_RE.search(first)
    if not shard:
        return [first]
    prefix = first[: shard.start()]
    return [p for p in paths if p.startswith(prefix) and _SHARD_RE.search(p)]


def _pick_projector(projectors: list[str], quant: str) -> str:
    for wanted in (quant, "F16", "BF16"):
        for path in sorted(projectors):
            if quant_of(path) == wanted:
                return path
    return sorted(projectors)[0]


def _select_whisper(names: dict[str, str]) -> list[Selected]:
    roles = {"model.bin": "model", "config.json": "config", "tokenizer.json": "tokenizer",
             "preprocessor_config.json": "preprocessor"}
    selected = [Selected(roles[n], names[n]) for n in WHISPER_FILES if n in names]
    selected += [Selected("vocabulary", p) for n, p in sorted(names.items()) if n.startswith("vocabulary")]
    return selected


def _select_patterns(paths: list[str], patterns: list[str]) -> list[Selected]:
    """--file GLOB (repeatable): the first match is the model; VAE/TAESD/mmproj/.json companions get their role."""
    matched: list[str] = []
    for pattern in patterns:
        hits = sorted(p for p in paths if _matches(p, pattern))
        if not hits:
            raise FileNotInRepoError(f"No file matches '{pattern}'. Files: {_listing(paths)}.", param="file")
        matched += [p for p in hits if p not in matched]
    for path in list(matched):  # a Piper voice always needs its config
        if path.endswith(".onnx") and path + ".json" in paths and path + ".json" not in matched:
            matched.append(path + ".json")
    if any(p.lower().endswith(".gguf") and "mmproj" not in p.lower() for p in matched):
        ggufs = [p for p in matched if p.lower().endswith(".gguf")]
        rest = [p for p in matched if p not in ggufs]
        return _select_gguf(ggufs, None) + [Selected(_companion_role(p), p) for p in rest]
    roles = [_companion_role(p) for p in matched]
    if "model" not in roles:  # a lone VAE or TAESD file is a model of its own
        roles[0] = "model"
    return [Selected("shard" if role == "model" and "model" in roles[:i] else role, path)
            for i, (role, path) in enumerate(zip(roles, matched, strict=True))]


def _matches(path: str, pattern: str) -> bool:
    return fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(PurePosixPath(path).name, pattern)


def _companion_role(path: str) -> str:
    name = PurePosixPath(path).name.lower()
    if "taesd" in name:
        return "taesd"
    if "vae" in name:
        return "vae"
    if "mmproj" in name:
        return "mmproj"
    if name.endswith(".json"):
        return "config"
    return "model"


def _listing(paths: list[str], limit: int = 12) -> str:
    shown = ", ".join(sorted(paths)[:limit])
    return shown + (f" (and {len(paths) - limit} more)" if len(paths) > limit else "") if paths else "(none)"
