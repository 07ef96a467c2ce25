"""`keep_alive` values: seconds, or durations such as "30s", "5m", "1h"; negative = forever."""

from __future__ import annotations

import re
from typing import Any

from runtime.errors import InvalidRequestError

FOREVER = -1.0
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_keep_alive(value: Any) -> float:
    """Seconds to stay loaded after the last request; FOREVER for any negative value."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip().lower())):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds is None:
        raise InvalidRequestError(
            f"Invalid value for 'keep_alive': {value!r}. Use seconds or a duration such as '30s', '5m' or '1h' "
            "(negative keeps the model loaded, 0 unloads it after the request).", param="keep_alive")
    return FOREVER if seconds < 0 else seconds
