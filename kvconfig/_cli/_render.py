"""Terminal output for the CLI: aligned tables, colour only where it belongs, the explain report.

Colour follows the usual conventions: only when the stream is a terminal, never when
``NO_COLOR`` is set (https://no-color.org) or ``TERM=dumb``. Widths are computed on the plain
text, so coloured and plain output line up the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from kvconfig._report import format_time

if TYPE_CHECKING:
    from kvconfig._report import ExplainReport, FieldReport

__all__ = [
    "MASK",
    "Cell",
    "Style",
    "format_time",
    "render_report",
    "render_table",
    "short_version",
]

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


# -- the explain report --------------------------------------------------------------------


_STATUS_STYLE = {
    "found": ("green",),
    "missing": ("yellow",),
    "disabled": ("red",),
    "expired": ("red",),
    "not-yet-valid": ("yellow",),
    "not-requested": ("red",),
    "invalid-value": ("red", "bold"),
}


def render_report(report: ExplainReport, style: Style) -> str:
    """The human-readable report: header, field table, problems, verdict."""
    prefixes = report.prefixes or (report.prefix,)
    if len(prefixes) > 1:
        prefix = " then ".join(repr(p) for p in prefixes)
    else:
        prefix = repr(report.prefix) if report.prefix else "none"
    aliases = ", ".join(f"{alias}={url}" for alias, url in report.vaults.items())
    lines = [
        f"{style('Settings', 'bold')}  {report.settings}",
        f"{style('Vault', 'bold')}     {report.vault_url}  (prefix: {prefix})",
        *(
            [f"{style('Fallback', 'bold')}  {', '.join(report.fallback_vaults)}  (in order)"]
            if report.fallback_vaults
            else []
        ),
        *([f"{style('Aliases', 'bold')}   {aliases}"] if aliases else []),
        f"{style('Sources', 'bold')}   {' > '.join(report.source_order)}  (first wins)",
        f"{style('Read', 'bold')}      {len(report.fields)} fields, "
        f"{report.requests} GET requests, {report.duration_ms:.0f} ms; values are never shown",
        "",
    ]
    several = len({f.vault for f in report.fields if f.vault}) > 1 or bool(report.fallback_vaults)
    rows: list[list[str | Cell]] = []
    for f in report.fields:
        version = short_version(f.version)
        if f.pinned_version:
            version += " (pinned)"
        row: list[str | Cell] = [f.field + ("" if f.required else " ?"), _secret_cell(f)]
        if several:
            row.append(_vault_label(f.vault, report))
        row += [
            Cell(f.status, _STATUS_STYLE.get(f.status, ())),
            version,
            format_time(f.updated),
            _source_cell(f),
        ]
        rows.append(row)
    headers = ["FIELD", "SECRET", "STATUS", "VERSION", "UPDATED", "SOURCE"]
    if several:
        headers.insert(2, "VAULT")
    lines.append(render_table(headers, rows, style))
    lines.append(style("  (? = optional: has a default)", "dim"))
    errors = [p for p in report.problems if p.severity == "error"]
    warnings = [p for p in report.problems if p.severity == "warning"]
    if report.problems:
        lines.append("")
        lines.append(style("Problems", "bold"))
        lines.extend(f"  {style('✗', 'red')} {p.message}" for p in errors)
        lines.extend(f"  {style('!', 'yellow')} {p.message}" for p in warnings)
    lines.append("")
    if report.ok:
        lines.append(style(f"OK: KeyVault.load({report.settings}) would succeed.", "green"))
    else:
        count = len(errors)
        lines.append(
            style(
                f"FAIL: KeyVault.load({report.settings}) would fail "
                f"({count} problem{'s' if count != 1 else ''}).",
                "red",
                "bold",
            )
        )
    return "\n".join(lines)


def _vault_label(url: str | None, report: ExplainReport) -> str:
    """An alias for ``url`` when it has one, ``primary``, ``fallback N``, else the URL."""
    if url is None:
        return "-"
    if url.lower() == report.vault_url.lower():
        return "primary"
    for alias, target in report.vaults.items():
        if target == url:
            return alias
    for index, fallback in enumerate(report.fallback_vaults, 1):
        if fallback == url:
            return f"fallback {index}"
    return url


def _secret_cell(report: FieldReport) -> Cell:
    if report.name_problem is None:
        if len(report.tried) > 1:
            return Cell(f"{report.secret} (after {len(report.tried) - 1} x 404)")
        return Cell(report.secret)
    return Cell(f"{report.secret} ({report.name_problem}!)", ("red", "bold"))


def _source_cell(report: FieldReport) -> Cell:
    if report.winner is None:
        return Cell("MISSING", ("red", "bold"))
    text = report.winner
    if report.env_var:
        text += f" {report.env_var}"
    if report.reference:
        text += " (Key Vault reference)"
    shadowed = [s for s in report.sources[1:] if s in ("vault", "env", "dotenv")]
    if shadowed and not report.nested:
        text += f" (over {', '.join(shadowed)})"
    elif report.nested and len(report.sources) > 1:
        text = " + ".join(report.sources)
    return Cell(text, ("cyan",) if report.winner == "vault" else ())
