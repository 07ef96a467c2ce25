"""The web playground: one page at `/` and `/playground`, its scripts and styles under `/playground/`.

The files ship as package data (runtime/server/playground/) and are read once, when the router is built.
The page holds no data, so it loads without a key; every API call it makes sends the key the user signed
in with. A strict Content-Security-Policy (scripts from this server only, no inline script, no framing)
keeps model output that the page shows from ever running as code.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from runtime.errors import NotFoundError

FILES = Path(__file__).resolve().parent.parent / "playground"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate, so an upgraded server's page is never mixed with old scripts
}


def load_files() -> dict[str, tuple[bytes, str]]:
    """Every asset by its URL name (`js/chat.js`), with its media type; nothing else is ever served."""
    return {path.relative_to(FILES).as_posix(): (path.read_bytes(), MEDIA_TYPES[path.suffix])
            for path in sorted(FILES.rglob("*")) if path.suffix in MEDIA_TYPES}


def create_router() -> APIRouter:
    files = load_files()
    router = APIRouter(include_in_schema=False)

    def asset(name: str) -> Response:
        found = files.get(name)
        if found is None:
            raise NotFoundError(f"No playground file '{name[:100]}'. Open /playground.", code="file_not_found")
        body, media_type = found
        return Response(body, media_type=media_type, headers=HEADERS)

    async def page() -> Response:
        return asset("index.html")

    async def playground_file(name: str) -> Response:
        return asset(name)

    router.add_api_route("/", page, methods=["GET"])
    router.add_api_route("/playground", page, methods=["GET"])
    router.add_api_route("/playground/{name:path}", playground_file, methods=["GET"])
    return router
