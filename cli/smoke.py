"""Shared machinery for `stacklet test ...`: timed checks and one report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import typer

from cli import output


@dataclass
class Check:
    name: str
    ok: bool = False
    detail: str = ""
    latency_s: float | None = None
    ttft_s: float | None = None  # time to first token/byte for streamed checks
    tokens_per_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Report:
    def __init__(self, title: str) -> None:
        self.title = title
        self.checks: list[Check] = []

    @contextmanager
    def check(self, name: str) -> Iterator[Check]:
        """Time a check; any exception marks it failed with a one-line reason."""
        result = Check(name)
        start = time.perf_counter()
        try:
            yield result
            result.ok = True
        except Exception as exc:  # a smoke test reports failures, it never crashes
            result.ok = False
            result.detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        if result.latency_s is None:
            result.latency_s = time.perf_counter() - start
        self.checks.append(result)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def finish(self, as_json: bool) -> None:
        """Print the table (or JSON) and exit 0 only when every check passed."""
        if as_json:
            output.print_json({"title": self.title, "ok": self.ok, "checks": [asdict(c) for c in self.checks]})
        else:
            rows = [
                [
                    "[green]pass[/]" if c.ok else "[red]FAIL[/]",
                    c.name,
                    _seconds(c.latency_s),
                    _seconds(c.ttft_s),
                    f"{c.tokens_per_s:.1f}" if c.tokens_per_s else "",
                    c.detail,
                ]
                for c in self.checks
            ]
            output.table(["", "check", "latency", "ttft", "tok/s", "detail"], rows, title=self.title)
        raise typer.Exit(0 if self.ok else 1)


def _seconds(value: float | None) -> str:
    return f"{value:.2f}s" if value is not None else ""



def expect(condition: bool, message: str) -> None:
    """A smoke check's assertion: `message` is what the report shows when it fails."""
    if not condition:
        raise AssertionError(message)


def rate(check: Check, tokens: int, start: float) -> None:
    check.latency_s = time.perf_counter() - start
    check.tokens_per_s = tokens / check.latency_s if check.latency_s else None
