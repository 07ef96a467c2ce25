"""Logging for the server and the workers: one handler on stderr whose records are cut to size.

A client's 10 MB string must not reach the log whole (a request path, a model name, an exception
that quotes its input), so each record's message and each line of its traceback is cut to
MAX_LOG_CHARS. uvicorn is started with `log_config=None`, so its access and error records come
through this handler too.
"""

from __future__ import annotations

import logging
import re
from types import TracebackType

MAX_LOG_CHARS = 2000
# A client may put a key in the query string (`?api_key=`, `?token=`); uvicorn logs each request's full path.
SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:key|token|secret|password|passwd|auth|signature|sig)[^=&#]*=)[^&#]*",
                          re.IGNORECASE)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def cut(text: str, limit: int = MAX_LOG_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} chars cut)"


class CappedFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = cut(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: ExcInfo) -> str:
        return "\n".join(cut(line) for line in super().formatException(ei).split("\n"))


def redact_query(path: str) -> str:
    return SECRET_QUERY.sub(r"\1***", path)


class SecretQueryFilter(logging.Filter):
    """Hides secret-looking query values in uvicorn's access records (args: client, method, path, version,
    status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) >= 3:
            args = list(record.args)
            args[2] = redact_query(str(args[2]))
            record.args = tuple(args)
        return True


def setup_logging(fmt: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(CappedFormatter(fmt))
    handler.addFilter(SecretQueryFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
