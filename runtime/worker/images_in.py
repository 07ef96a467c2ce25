"""Chat `image_url` parts -> PIL RGB images: data URLs decoded, http(s) URLs fetched, every one checked.

Fetching a URL is a request the server makes on a client's behalf, so it is fenced in: http and https
only, no redirects, a time limit and a size limit, and only public addresses unless the operator allows
private ones (`image_fetch_private`): the host name is resolved once, every address it resolves to is
checked, and the connection goes to the checked address (a second lookup could answer differently).
The bytes must be an image by their Content-Type and must decode. It runs in the worker, beside the
engine that reads the images: the router stays a proxy that never parses request bodies, and the
time a fetch takes is spent in the request that asked for it.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from runtime.errors import InvalidRequestError
from runtime.worker.images import MAX_INPUT_PIXELS

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")  # OpenAI's image input formats
FETCH_SECONDS = 10.0  # the whole fetch: connect, headers and body
MAX_IMAGES = 16  # per request


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int
    allow_private: bool = False


def load(url: str, policy: FetchPolicy, param: str) -> Any:
    """The image `url` names (data: or http(s)://), as a PIL RGB image."""
    if url.startswith("data:"):
        data = _data_url(url, policy.max_bytes, param)
    elif urlsplit(url).scheme.lower() in ("http", "https"):
        data = fetch(url, policy, param)
    else:
        raise InvalidRequestError("An image URL must be a data: URL or an http(s) URL.", param=param,
                                  code="invalid_image_url")
    return decode(data, param)


def _data_url(url: str, max_bytes: int, param: str) -> bytes:
    head, comma, payload = url.partition(",")
    media_type = head[5:].split(";")[0].strip().lower()
    if not comma or not head.endswith(";base64") or not media_type.startswith("image/"):
        raise InvalidRequestError("A data URL image must look like data:image/png;base64,<data>.", param=param,
                                  code="invalid_image_url")
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise InvalidRequestError(f"The image is larger than {max_bytes} bytes.", param=param,
                                  code="image_too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("The data URL's image is not valid base64.", param=param,
                                  code="invalid_image_url") from None


def decode(data: bytes, param: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in FORMATS:
            raise InvalidRequestError(f"The image is {image.format}; send a PNG, JPEG, WebP or GIF image.",
                                      param=param, code="invalid_image_format")
        if image.width * image.height > MAX_INPUT_PIXELS:
            raise InvalidRequestError(f"The image is {image.width}x{image.height}; the limit is 4096x4096 "
                                      "pixels.", param=param, code="image_too_large")
        return image.convert("RGB")
    except Image.DecompressionBombError:
        raise InvalidRequestError("The image has too many pixels; the limit is 4096x4096.", param=param,
                                  code="image_too_large") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidRequestError("The image could not be decoded. Send a PNG, JPEG, WebP or GIF image.",
                                  param=param, code="invalid_image") from None


def fetch(url: str, policy: FetchPolicy, param: str) -> bytes:
    import httpx

    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise InvalidRequestError("The image URL has no host.", param=param, code="invalid_image_url")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise InvalidRequestError("The image URL's port is invalid.", param=param, code="invalid_image_url") from None
    address = resolve(host, port, policy.allow_private, param)
    target = parts._replace(netloc=f"[{address}]:{port}" if ":" in address else f"{address}:{port}").geturl()
    headers = {"Host": parts.netloc.rpartition("@")[2], "Accept": "image/*"}
    deadline = time.monotonic() + FETCH_SECONDS
    try:
        with httpx.Client(timeout=FETCH_SECONDS, follow_redirects=False, trust_env=False) as client, \
                client.stream("GET", target, headers=headers, extensions={"sni_hostname": host}) as response:
            _check_response(response, policy.max_bytes, param)
            body = bytearray()
            for piece in response.iter_bytes():
                body += piece
                if len(body) > policy.max_bytes:
                    raise InvalidRequestError(f"The image at the URL is larger than {policy.max_bytes} bytes.",
                                               param=param)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("deadline")
            return bytes(body)
    except httpx.TimeoutException:
        raise InvalidRequestError(f"Fetching the image took longer than {FETCH_SECONDS:.0f} s.", param=param,
                                  code="image_fetch_failed") from None
    except httpx.HTTPError as exc:
        raise InvalidRequestError(f"Could not fetch the image: {type(exc).__name__}.", param=param,
                                  code="image_fetch_failed") from None


def _check_response(response: Any, max_bytes: int, param: str) -> None:
    if 300 <= response.status_code < 400:
        raise InvalidRequestError("The image URL redirects; redirects are not followed. Send the final URL.",
                                  param=param, code="image_fetch_failed")
    if response.status_code != 200:
        raise InvalidRequestError(f"Fetching the image failed: HTTP {response.status_code}.", param=param,
                                  code="image_fetch_failed")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith("image/"):
        raise InvalidRequestError(f"The URL is not an image (Content-Type {content_type or 'missing'!r}).",
                                  param=param, code="invalid_image")
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise InvalidRequestError(f"The image at the URL is larger than {max_bytes} bytes.", param=param,
                                  code="image_too_large")


def resolve(host: str, port: int, allow_private: bool, param: str) -> str:
    """The address to connect to; a 400 when the host does not resolve or resolves to a refused address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InvalidRequestError(f"The image URL's host {host[:100]!r} does not resolve.", param=param,
                                  code="image_fetch_failed") from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        refusal = refused(ipaddress.ip_address(address.split("%")[0]), allow_private)
        if refusal:
            raise InvalidRequestError(f"The image URL's host resolves to a {refusal} address; the server does not "
                                      "fetch from it. An operator can allow private addresses with the "
                                      "image_fetch_private setting.", param=param, code="image_url_refused")
    return addresses[0]


def refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    """Why the server does not connect to `address`, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified or address.is_multicast:
        return "non-unicast"
    if allow_private:
        return None
    for kind in ("loopback", "link_local", "private", "reserved"):
        if getattr(address, "is_" + kind):
            return kind.replace("_", "-")
    return None
