"""Human and machine output for the CLI: rich for people, one JSON document for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_json_line(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


def table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    view = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        view.add_column(column)
    for row in rows:
        view.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(view)


def listing(columns: list[str], rows: list[list[Any]]) -> None:
    """A table whose cells are never cut (model names, sources): rich's table when the terminal is wide
    enough for every cell, else plain columns as `ollama list` prints them (also in a pipe, for awk),
    each line as long as its cells need."""
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(columns)]
    rich_width = sum(widths) + 3 * len(widths) - 1  # one space of padding each side, one rule between
    if console.is_terminal and rich_width <= console.width:
        view = Table(show_edge=False, header_style="bold")
        for column in columns:
            view.add_column(column, no_wrap=True)
        for row in cells:
            view.add_row(*map(Text, row))  # names are shown as they are, never read as markup
        console.print(view)
        return
    for row in [columns, *cells]:
        console.file.write("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                           + "\n")


def say(text: str, markup: bool = True) -> None:
    """One message, never re-wrapped (so URLs, paths, keys and commands stay copyable)."""
    console.print(text, highlight=False, soft_wrap=True, markup=markup)


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
