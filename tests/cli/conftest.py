"""Helpers for the CLI tests: an emulator served from a thread (for in-process ``main()`` calls,
which run their own event loop) with its environment exported, and a ``kvconfig`` subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvconfig.emulator import CertificateAuthority, EmulatorThread, KeyVaultEmulator


@pytest.fixture
def threaded_vault(
    keyvault_ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KeyVaultEmulator]:
    """A running emulator whose VAULT_URL and managed identity are exported, so
    ``DefaultAzureCredential`` in this process gets its tokens from it.

    The CA is not exported (pass ``--ca-file``): the system SSL context is built once per
    process, and one built while SSL_CERT_FILE names this CA would trust it in later tests.
    """
    for name in list(os.environ):
        if name.startswith(("AZURE_", "MSI_", "IDENTITY_")):
            monkeypatch.delenv(name)
    with EmulatorThread(ca=keyvault_ca) as emu:
        for key, value in emu.environment().items():
            if key not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
                monkeypatch.setenv(key, value)
        yield emu


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without Azure credentials, plus ``extra``; never coloured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_"))}
    env.pop("NO_COLOR", None)
    env.update(extra or {})
    return env


def run_kvconfig(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``kvconfig ARGS`` as a user runs it (the installed console script, whose directory, not
    the current one, is first on ``sys.path``); output captured, so not a TTY."""
    script = Path(sys.executable).with_name("kvconfig")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "kvconfig"]
    return subprocess.run(
        [*command, *args],
        env=env if env is not None else child_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
