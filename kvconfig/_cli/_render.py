"""Terminal output for the CLI: aligned tables and colour only where it belongs.

Colour follows the usual conventions: only when the stream is a terminal, never when
``NO_COLOR`` is set (https://no-color.org) or ``TERM=dumb``. Widths are computed on the plain
text, so coloured and plain output line up the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["MASK", "Cell", "Style", "format_time", "render_table", "short_version"]

MASK = "••••••"
"""What a secret value is shown as (always the same width, so it reveals nothing)."""

_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}


@dataclass(frozen=True, slots=True)
class Style:
    """Applies ANSI styles when enabled, else returns the text unchanged."""

    enabled: bool = False

    @classmethod
    def for_stream(cls, stream: TextIO) -> Style:
        """Colour if ``stream`` is a terminal and neither ``NO_COLOR`` nor ``TERM=dumb`` is set."""
        if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
            return cls(False)
        isatty = getattr(stream, "isatty", None)
        return cls(bool(isatty is not None and isatty()))

    def __call__(self, text: str, *styles: str) -> str:
        """``text`` wrapped in the named styles (``"bold"``, ``"red"``, ...)."""
        if not self.enabled or not styles or not text:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell with optional styles (the width is that of the plain text)."""

    text: str
    styles: tuple[str, ...] = ()


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str | Cell]],
    style: Style,
    *,
    indent: str = "  ",
    gap: str = "  ",
) -> str:
    """An aligned table: bold header, one line per row, columns padded to the widest cell."""
    cells = [[c if isinstance(c, Cell) else Cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell.text))
    last = len(headers) - 1
    lines = [
        indent
        + gap.join(style(_pad(h, widths[i], i == last), "bold") for i, h in enumerate(headers))
    ]
    for row in cells:
        parts = [style(_pad(c.text, widths[i], i == last), *c.styles) for i, c in enumerate(row)]
        lines.append((indent + gap.join(parts)).rstrip())
    return "\n".join(line.rstrip() for line in lines)


def _pad(text: str, width: int, last: bool) -> str:
    return text if last else text.ljust(width)


def short_version(version: str | None) -> str:
    """The first 8 hex digits of a version id (enough to tell versions apart), or ``-``."""
    return version[:8] if version else "-"


def format_time(moment: datetime | None) -> str:
    """A UTC time as ``2026-11-22 14:30:05Z``, or ``-``."""
    if moment is None:
        return "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")
