"""Multipart forms as the OpenAI SDKs encode them -> plain dicts for the request schemas.

Lists arrive as repeated `key[]` parts (or a repeated plain `key`), nested objects as
`key[sub]`, booleans as "true"/"false" and numbers as decimal strings; pydantic coerces those. A
field sent as "null" (what FormData.append(key, null) writes) is unset, as null is in JSON.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import FormData

_NESTED = re.compile(r"^([^\[\]]+)\[([^\[\]]+)\]$")


def form_to_dict(form: FormData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in form.multi_items():
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
