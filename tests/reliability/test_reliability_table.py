"""``scripts/reliability-table``: the Markdown table of recorded figures and the target check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reliability-table"


def _run(figures: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={"KVCONFIG_FIGURES": str(figures), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _write(path: Path, *docs: dict[str, object]) -> None:
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs))


def test_prints_every_figure_and_checks_targets(tmp_path: Path) -> None:
    figures = tmp_path / "figures.jsonl"
    _write(
        figures,
        {"name": "b.leaks", "value": 0, "target": "0", "test": "t"},
        {"name": "a.converge", "value": 0.4, "target": "<= 1 interval", "test": "t"},
        {"name": "c.tried", "value": 200, "target": None, "test": "t"},
    )
    ok = _run(figures)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0] == "| Figure | Value | Target | Met |"
    assert lines[2:] == [
        "| `a.converge` | 0.4 | <= 1 interval | yes |",
        "| `b.leaks` | 0 | 0 | yes |",
        "| `c.tried` | 200 |  |  |",
    ]

    _write(figures, {"name": "b.leaks", "value": 2, "target": "0", "test": "t"})
    failing = _run(figures)
    assert failing.returncode == 1
    assert "| `b.leaks` | 2 | 0 | **no** |" in failing.stdout
    assert "b.leaks" in failing.stderr


def test_no_figures_is_an_error(tmp_path: Path) -> None:
    result = _run(tmp_path / "missing.jsonl")
    assert result.returncode == 1
    assert "no figures" in result.stderr
