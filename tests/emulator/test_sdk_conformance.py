"""The Azure SDK's own live tests (azure-keyvault-secrets' sdist) pass against `kvconfig emulator`.

The harness lives in ``../shared/conformance/azure-sdk-live`` beside the repository (CI always has
it; ``KVCONFIG_SHARED_DIR`` points elsewhere). ``run.sh`` downloads the sdist of the installed SDK
version, so the run needs the package index. Two runs, at once:

- unpatched, at every API version the SDK lists (``-p sdktests_allversions``): the SDK's tests as
  shipped, at ``https://NAME.vault.azure.net`` through the emulator's HTTPS proxy, with the SDK's
  challenge-resource check on;
- patched (``verify_challenge_resource=False``), at the loopback ``VAULT_URL``, at the SDK's
  default API version (the loopback authority is what differs; running it at every version too
  adds ~30 s for nothing the first run does not cover:
  ``../shared/conformance/azure-sdk-live/run.sh .venv/bin/python -p sdktests_allversions``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("KVCONFIG_SHARED_DIR", ROOT.parent / "shared"))
RUN = SHARED / "conformance" / "azure-sdk-live" / "run.sh"

pytestmark = pytest.mark.skipif(
    not RUN.exists(),
    reason=f"the SDK conformance harness is not at {RUN} (a clone without ../shared beside it)",
)


def _start(extra_env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_"))}
    env.update(extra_env)
    return subprocess.Popen(
        ["bash", str(RUN), sys.executable, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )


def _summary(proc: subprocess.Popen[str]) -> tuple[str, str]:
    out, _ = proc.communicate(timeout=600)
    lines = [line for line in out.splitlines() if line.strip()]
    return (lines[-1] if lines else ""), out


def test_sdk_live_tests_pass_at_every_api_version() -> None:
    # Both runs at once: each mostly waits on its own pytest process.
    runs = {
        "unpatched": _start(
            {"SDK_LIVE_NO_PATCH": "1", "SDK_LIVE_VAULT_URL": "https://conformance.vault.azure.net"},
            "-p",
            "sdktests_allversions",
        ),
        "patched": _start({}),
    }
    for name, proc in runs.items():
        last, out = _summary(proc)
        assert proc.returncode == 0, f"{name} run failed:\n{out[-6000:]}"
        assert re.search(r"\b\d+ passed\b", last) and "failed" not in last, f"{name}: {last}"
