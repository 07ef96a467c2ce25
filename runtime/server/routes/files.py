"""Generated images served by URL (`response_format: url`), kept for `settings.image_url_ttl`.

Workers write the files (`ImageFiles.save`) into the cache dir they share with the server; the
server serves them under both API prefixes, behind the same auth as every other route.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from runtime.config import Settings
from runtime.errors import NotFoundError
from runtime.server.auth import require_api_key

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Names are ours: a random token and a known extension. Anything else (paths, dots) is refused.
_NAME = re.compile(r"^[A-Za-z0-9_-]{20,64}\.(png|jpeg|webp)$")


class ImageFiles:
    def __init__(self, settings: Settings) -> None:
        self.root = settings.paths.cache / "images"
        self.ttl = settings.image_url_ttl

    def save(self, data: bytes, extension: str) -> str:
        """Store one image under an unguessable name and return that name."""
        self.sweep()
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{secrets.token_urlsafe(24)}.{extension}"
        partial = self.root / (name + ".partial")
        partial.write_bytes(data)
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


def create_router(settings: Settings) -> APIRouter:
    files = ImageFiles(settings)
    router = APIRouter(dependencies=[Depends(require_api_key)])

    async def get_image_file(name: str) -> FileResponse:
        path = files.find(name)
        if path is None:
            raise NotFoundError(f"No image file '{name}': it has expired or never existed. "
                                "Generate it again.", code="file_not_found")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix[1:]])

    for prefix in ("/v1-openai", "/v1"):
        router.add_api_route(prefix + "/images/files/{name}", get_image_file, methods=["GET"],
                             operation_id="getImageFile" + ("" if prefix == "/v1-openai" else "V1"),
                             tags=["openai"])
    return router
