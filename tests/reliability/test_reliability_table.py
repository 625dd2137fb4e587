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


def test_summary_aggregates_and_flags_an_unmet_target(tmp_path: Path) -> None:
    figures = tmp_path / "figures.jsonl"
    _write(
        figures,
        {"name": "library.leaks.found", "value": 0, "target": "0"},
        {"name": "library.leaks.cli_found", "value": 2, "target": "0"},
        {"name": "library.leaks.log_records_scanned", "value": 40},
        {"name": "library.leaks.strings_scanned", "value": 2},
        {"name": "emulator.hostile.tried.bodies", "value": 5},
        {"name": "emulator.hostile.tried.paths", "value": 7},
        {"name": "emulator.hostile.answers_5xx.bodies", "value": 0, "target": "0"},
    )
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--summary"],
        env={"KVCONFIG_FIGURES": str(figures), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1  # a leak target is not met
    leaks = next(line for line in result.stdout.splitlines() if "No secret value" in line)
    assert "42 records" in leaks and "2 canaries found" in leaks and "**no**" in leaks
    hostile = next(line for line in result.stdout.splitlines() if "to the emulator" in line)
    assert "12 bad inputs" in hostile and hostile.endswith("| yes |")
