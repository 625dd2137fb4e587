"""Figures the reliability suite measures, kept for the README summary table.

Every reliability test that measures something calls :func:`record` with a stable dotted name,
the value it measured and, when the issue sets one, the target it asserts (as text, e.g.
``"0"`` or ``"<= 1 interval"``)::

    from _figures import record  # tests/reliability is on sys.path (no __init__.py)

    record("emulator.hostile.inputs_tried", tried)
    record("emulator.hostile.answers_5xx", fives, target="0")

The figures live in one JSON-lines file, one line per name, the latest value winning:
``{"name", "value", "target", "test"}`` (``test`` is the pytest node id, from
``PYTEST_CURRENT_TEST``). The file is ``bench/results/reliability.jsonl`` at the repository root,
or the path in ``KVCONFIG_FIGURES``. Each call rewrites it atomically (temp file + rename, under
a lock on its directory, so concurrent runs lose nothing), so an interrupted run never leaves
half a line, and the file only changes where a figure changed. Record before asserting the
target, so a failing run still leaves its figure. :func:`load` returns the figures for a table
printer (``scripts/reliability-table``), in name order.

Plain standard library on purpose: the table script imports this file without pytest.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FIGURES_FILE", "figures_file", "load", "record"]

FIGURES_FILE = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.jsonl"


def figures_file() -> Path:
    """Where figures are kept: ``$KVCONFIG_FIGURES`` or :data:`FIGURES_FILE`."""
    override = os.environ.get("KVCONFIG_FIGURES")
    return Path(override) if override else FIGURES_FILE


def load(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """All recorded figures, name -> record, sorted by name. Missing file: empty."""
    path = path or figures_file()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    figures: dict[str, dict[str, Any]] = {}
    for line in lines:
        if line.strip():
            doc = json.loads(line)
            figures[doc["name"]] = doc
    return dict(sorted(figures.items()))


def record(name: str, value: Any, target: str | None = None) -> None:
    """Keep one measured figure (JSON-serialisable ``value``) under ``name``, replacing the last."""
    path = figures_file()
    test = os.environ.get("PYTEST_CURRENT_TEST", "").removesuffix(" (call)")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two test runs may record at once: lock the directory around the read-modify-write.
    lock = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        figures = load(path)
        figures[name] = {"name": name, "value": value, "target": target, "test": test}
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        lines = [json.dumps(doc, sort_keys=True) + "\n" for _, doc in sorted(figures.items())]
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        os.close(lock)  # releases the lock
