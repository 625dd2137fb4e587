"""Every code block in the README runs, against a real emulator, as a reader would run it.

- The first ``bash`` block holds the two set-up commands; the second must be what ``.ci/run``
  runs, and the first must end by running the demo (``tests/cli`` runs the demo itself).
- ``python`` blocks run in order in one fresh interpreter, with the environment that
  ``kvconfig emulator`` exports (``VAULT_URL``, ``SSL_CERT_FILE``, ``IDENTITY_*``), so
  ``DefaultAzureCredential()`` gets its token from the emulator for real, plus
  ``SHARED_VAULT_URL`` and ``LEGACY_VAULT_URL`` (two more vaults of the same emulator).
- A block after ``<!-- readme-test: pytest -->`` is a test file: it runs under pytest in a
  directory outside the repository, the plugin coming from the entry point.
- Other ``bash`` blocks run in a temporary directory with the virtualenv on ``PATH``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import kvconfig
from kvconfig.emulator import EmulatorThread

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

# What the README's examples expect to find in the vault.
SEED = {
    "database--host": "db.internal.example",
    "database--password": "readme-db-password",
    "api-key": "readme-api-key",
    "payments-stripe-key": "readme-stripe-key",
    "feature-flags": '{"dark_mode": false}',
}

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_MARK = re.compile(r"<!-- readme-test: (\w+) -->\s*$")


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int
    mode: str  # "run" or the mode of a preceding <!-- readme-test: MODE --> comment


def blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        found.append(
            Block(
                language=match.group(1),
                code=match.group(2),
                line=text.count("\n", 0, match.start()) + 1,
                mode=mark.group(1) if mark else "run",
            )
        )
    return found


# The "Several vaults and environments" example: a shared and a legacy vault.
SHARED_SEED = {
    "partner-key": "readme-partner-key",
    "telemetry--endpoint": "https://telemetry.example",
    "telemetry--api-key": "readme-telemetry-key",
    "queue": "readme-queue",
}
LEGACY_SEED = {"queue-name": "readme-legacy-queue"}


@pytest.fixture(scope="module")
def emulator_env() -> Iterator[dict[str, str]]:
    thread = EmulatorThread()
    with thread as emu:
        emu.seed(SEED)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_"))}
        env.update(emu.environment())
        env["SHARED_VAULT_URL"] = thread.call(emu.add_vault("shared"))
        env["LEGACY_VAULT_URL"] = thread.call(emu.add_vault("legacy"))
        emu.seed(SHARED_SEED, "shared")
        emu.seed(LEGACY_SEED, "legacy")
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        yield env


def test_every_block_is_executed_by_this_module() -> None:
    """Only languages this module knows how to run: a new kind of block needs a runner here."""
    languages = {(b.language, b.mode) for b in blocks()}
    assert languages <= {("bash", "run"), ("python", "run"), ("python", "pytest")}, languages


def test_setup_commands_are_the_ci_command_and_the_demo() -> None:
    first = blocks()[0]
    assert first.language == "bash"
    demo, test = first.code.strip().splitlines()
    assert demo.endswith("kvconfig demo")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == test, "the README's test command and .ci/run have drifted apart"


def test_python_blocks_run(emulator_env: dict[str, str], tmp_path: Path) -> None:
    parts = [
        f"# --- README.md line {b.line} ---\n{b.code}"
        for b in blocks()
        if b.language == "python" and b.mode == "run"
    ]
    assert len(parts) >= 3
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n".join(parts), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        env=emulator_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "db.internal.example" in result.stdout  # the quickstart printed the vault's value
    assert "readme-api-key" not in result.stdout + result.stderr  # SecretStr kept it hidden


def test_pytest_blocks_pass_outside_the_repository(tmp_path: Path) -> None:
    tests = [b for b in blocks() if b.mode == "pytest"]
    assert tests
    for index, block in enumerate(tests):
        (tmp_path / f"test_readme_{index}.py").write_text(block.code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(tests)} passed" in result.stdout


def test_shell_blocks_run(tmp_path: Path) -> None:
    shell = [b for b in blocks()[1:] if b.language == "bash"]
    assert shell
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    for block in shell:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.code],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"README line {block.line}:\n{result.stdout}{result.stderr}"


def test_api_reference_lists_every_public_name() -> None:
    text = README.read_text(encoding="utf-8")
    reference = text.split("## API reference", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in kvconfig.__all__ if f"`{name}" not in reference]
    assert not missing, f"README API reference lacks {missing}"
