"""Reading an uploaded file within a size limit: 413 past it, checked before reading when the size is known."""

from __future__ import annotations

from typing import Any

from runtime.errors import PayloadTooLargeError


async def read_upload(upload: Any, limit: int, param: str) -> bytes:
    """The bytes of a starlette UploadFile (or anything with `size` and async `read`)."""
    size = getattr(upload, "size", None)
    if size is not None and size > limit:
        raise _too_large(param, limit, size)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise _too_large(param, limit, len(data))
    return data


def _too_large(param: str, limit: int, size: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"Maximum content size limit ({limit}) exceeded ({size} bytes read) for "
                                f"'{param}'. Send a smaller file.", param=param)
