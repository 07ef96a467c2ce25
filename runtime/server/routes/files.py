"""GET /v1/images/files/{name}: the images workers saved for `response_format: url` (runtime/http/files.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from runtime.config import Settings
from runtime.errors import NotFoundError
from runtime.http.files import MEDIA_TYPES, ImageFiles
from runtime.server.auth import require_api_key
from runtime.spec import API_PREFIXES


def create_router(settings: Settings) -> APIRouter:
    files = ImageFiles(settings.paths.images, settings.image_url_ttl)
    router = APIRouter(dependencies=[Depends(require_api_key)])

    async def get_image_file(name: str) -> FileResponse:
        path = files.find(name)
        if path is None:
            raise NotFoundError(f"No image file '{name}': it has expired or never existed. "
                                "Generate it again.", code="file_not_found")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix[1:]])

    for prefix in API_PREFIXES:
        router.add_api_route(prefix + "/images/files/{name}", get_image_file, methods=["GET"],
                             operation_id="getImageFile" + ("" if prefix == "/v1-openai" else "V1"),
                             tags=["openai"])
    return router
