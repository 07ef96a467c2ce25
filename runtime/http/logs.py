"""Logging for the server and the workers: one handler on stderr whose records are cut to size.

A client's 10 MB string must not reach the log whole (a request path, a model name, an exception
that quotes its input), so each record's message and each line of its traceback is cut to
MAX_LOG_CHARS. uvicorn is started with `log_config=None`, so its access and error records come
through this handler too.
"""

from __future__ import annotations

import logging
from types import TracebackType

MAX_LOG_CHARS = 2000

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def cut(text: str, limit: int = MAX_LOG_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} chars cut)"


class CappedFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = cut(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: ExcInfo) -> str:
        return "\n".join(cut(line) for line in super().formatException(ei).split("\n"))


def setup_logging(fmt: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(CappedFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)
