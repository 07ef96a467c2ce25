"""Generated images served by URL (`response_format: url`), kept for a time to live.

Workers write the files (`ImageFiles.save`) into a directory they share with the server; the server
serves them under both API prefixes (server/routes/files.py), behind the same auth as every route.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from runtime.config import open_private, private_dir

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Names are ours: a random token and a known extension. Anything else (paths, dots) is refused.
_NAME = re.compile(r"^[A-Za-z0-9_-]{20,64}\.(png|jpeg|webp)$")


class ImageFiles:
    def __init__(self, root: Path, ttl: float) -> None:
        self.root = root
        self.ttl = ttl

    def save(self, data: bytes, extension: str) -> str:
        """Store one image under an unguessable name and return that name."""
        self.sweep()
        private_dir(self.root)
        name = f"{secrets.token_urlsafe(24)}.{extension}"
        partial = self.root / (name + ".partial")
        with open_private(partial, "wb") as out:
            out.write(data)
        partial.replace(self.root / name)
        return name

    def find(self, name: str) -> Path | None:
        """The file for `name` while it has not expired."""
        self.sweep()
        if not _NAME.match(name):
            return None
        path = self.root / name
        return path if path.is_file() else None

    def sweep(self) -> None:
        """Delete expired files (and partial writes a crash left behind)."""
        if not self.root.is_dir():
            return
        cutoff = time.time() - self.ttl
        for path in self.root.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:  # another process swept it first
                continue
