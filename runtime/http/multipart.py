"""Multipart forms as the OpenAI SDKs encode them -> plain dicts for the request schemas.

Lists arrive as repeated `key[]` parts (or a repeated plain `key`), nested objects as
`key[sub]`, booleans as "true"/"false" and numbers as decimal strings; pydantic coerces those. A
field sent as "null" (what FormData.append(key, null) writes) is unset, as null is in JSON. Names,
values and file names with lone surrogates (a part's charset can be a codec that makes them) are a 400.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import FormData, UploadFile

from runtime.http.jsonbody import check_text

_NESTED = re.compile(r"^([^\[\]]+)\[([^\[\]]+)\]$")


def form_to_dict(form: FormData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in form.multi_items():
        check_text(key, key)
        check_text(value.filename if isinstance(value, UploadFile) else value, key)
        if value == "null":
            continue
        if key.endswith("[]"):
            _append(out, key[:-2], value)
        elif match := _NESTED.match(key):
            name, sub = match.groups()
            nested = out.setdefault(name, {})
            if isinstance(nested, dict):
                nested[sub] = value
        elif key in out:
            _append(out, key, value)
        else:
            out[key] = value
    return out


def _append(out: dict[str, Any], key: str, value: Any) -> None:
    current = out.get(key)
    if current is None:
        out[key] = [value]
    elif isinstance(current, list):
        current.append(value)
    else:
        out[key] = [current, value]
