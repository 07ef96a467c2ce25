"""Local imports over the management API: only from directories the operator lists in `import_dirs`.

`stacklet pull ./file.gguf` imports through the store in its own process, on the machine it runs on;
over the API a path names the server's files, so it is refused unless it resolves (symlinks followed)
inside an allowed directory, and so does every file beside or under it that the import would look at.
A refusal says nothing about what is or is not on the server's disk.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from runtime.errors import PermissionDeniedError

REFUSED_MESSAGE = (
    "Local paths are imported over the API only from the directories in the server's import_dirs setting: "
    "give an absolute path that stays inside one of them (symlinks followed). Otherwise pull from Hugging "
    "Face, run `stacklet pull PATH` on the server's machine, or ask its operator to add the directory to "
    "import_dirs (STACKLET_IMPORT_DIRS)."
)
# What names a file rather than a Hugging Face repo: a POSIX or Windows path, or a model file's name.
_PATH_LIKE = re.compile(r"^(/|~|\.{1,2}([/\\]|$)|[A-Za-z]:[/\\])|\\|\.(gguf|onnx|safetensors)$", re.IGNORECASE)


def local_source(source: str, import_dirs: tuple[str, ...]) -> Path | None:
    """The resolved path to import when `source` is a path the server may import; None when it names a
    Hugging Face repo. Blocking (it walks a directory source): call it in a thread."""
    if not _PATH_LIKE.search(source):
        return None
    if not import_dirs:  # refused without touching the filesystem
        raise _refused()
    if not Path(source).is_absolute():
        raise _refused()
    try:
        allowed = [Path(d).expanduser().resolve() for d in import_dirs]
        target = Path(source).resolve()
        if not _inside(target, allowed) or not _looked_at_inside(target, allowed):
            raise _refused()
    except (OSError, ValueError, RuntimeError):  # NUL bytes, lone surrogates, symlink loops, unreadable dirs
        raise _refused() from None
    return target


def _inside(path: Path, allowed: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in allowed)


def _looked_at_inside(target: Path, allowed: list[Path]) -> bool:
    """Whether every file the store lists for this import resolves inside `allowed`: a file's siblings
    (shards, a voice's .onnx.json), or everything under a directory."""
    if not target.is_dir():
        return not target.parent.is_dir() or all(_inside(p.resolve(), allowed) for p in target.parent.iterdir())
    seen: set[str] = set()
    for top, dirs, files in os.walk(target, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a symlink loop, or two links to one directory
            dirs.clear()
            continue
        seen.add(real)
        if not _inside(Path(real), allowed):
            return False
        if not all(_inside(Path(os.path.realpath(os.path.join(top, f))), allowed) for f in files):
            return False
    return True


def _refused() -> PermissionDeniedError:
    return PermissionDeniedError(REFUSED_MESSAGE, param="source", code="local_import_not_allowed")
