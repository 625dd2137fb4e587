"""Import cost: what `import kvconfig`, its pytest plugin and the CLI's --version cost a process.

Each case runs in a fresh interpreter (``python -c``) and is timed from outside (wall time of the
whole process, interpreter start-up included), interleaved case by case, median of ``--runs``.
The "extra" column subtracts the baseline the case builds on (a bare interpreter, or an
interpreter that already imported pytest and pytest-asyncio, as a pytest run has).

Run::

    .venv/bin/python bench/bench_import.py --runs 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

BARE = "python (bare interpreter)"
VERSION = "from kvconfig._cli import main\ntry: main(['--version'])\nexcept SystemExit: pass"
CASES: list[tuple[str, str, str]] = [
    # (label, code, baseline label)
    (BARE, "pass", ""),
    ("import kvconfig", "import kvconfig", BARE),
    ("import kvconfig; kvconfig.KeyVault", "import kvconfig; kvconfig.KeyVault", BARE),
    ("import pytest, pytest_asyncio", "import pytest, pytest_asyncio", ""),
    (
        "  + import kvconfig.pytest_plugin",
        "import pytest, pytest_asyncio; import kvconfig.pytest_plugin",
        "import pytest, pytest_asyncio",
    ),
    (
        "kvconfig --version",
        VERSION,
        BARE,
    ),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {label: [] for label, _, _ in CASES}
    for _ in range(args.runs):
        for label, code, _ in CASES:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            times[label].append((time.perf_counter() - started) * 1000)
    medians = {label: statistics.median(values) for label, values in times.items()}
    print(f"{'case':40} {'median ms':>10} {'extra ms':>10}")
    for label, _, base in CASES:
        extra = f"{medians[label] - medians[base]:10.0f}" if base else f"{'':>10}"
        print(f"{label:40} {medians[label]:10.0f} {extra}")


if __name__ == "__main__":
    main()
