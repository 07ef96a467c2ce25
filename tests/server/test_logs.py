"""Log records are cut to size (runtime/http/logs.py): a client's 10 MB string never lands in the log whole."""

from __future__ import annotations

import logging

from runtime.http.logs import MAX_LOG_CHARS, CappedFormatter


def record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("stacklet", logging.WARNING, __file__, 1, message, args, exc_info)  # type: ignore[arg-type]


def test_a_long_message_is_cut_with_a_marker():
    formatter = CappedFormatter("%(levelname)s %(message)s")
    text = formatter.format(record("model %s not found", "x" * 10_000_000))
    assert len(text) < MAX_LOG_CHARS + 100
    assert text.startswith("WARNING model xxx")
    assert text.endswith(f"... ({10_000_000 + len('model  not found') - MAX_LOG_CHARS} chars cut)")
    assert formatter.format(record("short")) == "WARNING short"


def test_a_traceback_keeps_every_line_and_cuts_long_ones():
    try:
        raise KeyError("k" * 100_000)
    except KeyError:
        import sys

        text = CappedFormatter("%(message)s").format(record("failed", exc_info=sys.exc_info()))
    lines = text.splitlines()
    assert lines[0] == "failed" and lines[1] == "Traceback (most recent call last):"
    assert lines[-1].startswith("KeyError: 'kkk") and lines[-1].endswith("chars cut)")
    assert max(len(line) for line in lines) < MAX_LOG_CHARS + 100
