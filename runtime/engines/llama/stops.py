"""Generated text that may be the start of a marker (a stop string, `<think>`, `<tool_call>`) is held
back until the next text decides."""

from __future__ import annotations


class StopScanner:
    """Cuts text at the first stop string, holding back any tail that could still become one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.matched: str | None = None  # the stop string that was hit

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was hit)."""
        text = self.held + text
        hits = [(at, stop) for stop in self.stops if (at := text.find(stop)) >= 0]
        if hits:
            self.held = ""
            at, self.matched = min(hits, key=lambda hit: hit[0])
            return text[:at], True
        keep = held_back(text, self.stops)
        self.held = text[len(text) - keep:]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text


def held_back(text: str, markers: list[str] | tuple[str, ...]) -> int:
    """Length of the longest end of `text` that could begin one of `markers`."""
    for size in range(min(len(text), max(map(len, markers), default=0)), 0, -1):
        if any(m.startswith(text[-size:]) for m in markers):
            return size
    return 0
