"""The plugin's fixtures: the threaded emulator for sync tests, and a clear error (not a hang)
when a sync test asks for the event-loop one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from kvconfig import KeyVault
from kvconfig.emulator import KeyVaultEmulator


class Payment(BaseSettings):
    stripe_key: SecretStr


@pytest.mark.keyvault_secrets({"stripe-key": "sk_marker"})
def test_sync_fixture_serves_sync_code(keyvault_emulator_sync: KeyVaultEmulator) -> None:
    emu = keyvault_emulator_sync
    assert os.environ["VAULT_URL"] == emu.vault_url
    assert os.environ["IDENTITY_ENDPOINT"] == emu.identity_endpoint
    assert "SSL_CERT_FILE" not in os.environ or os.environ["SSL_CERT_FILE"] != str(emu.ca_file)

    async def load() -> Payment:
        async with KeyVault(emu.vault_url, emu.credential(), ca_file=emu.ca_file) as vault:
            return await vault.load(Payment)

    assert asyncio.run(load()).stripe_key.get_secret_value() == "sk_marker"
    emu.seed({"stripe-key": "sk_seeded"})  # store methods work between requests
    assert asyncio.run(load()).stripe_key.get_secret_value() == "sk_seeded"
    assert [r.status for r in emu.requests if r.method == "GET"].count(200) == 2


def test_sync_test_asking_for_the_async_fixture_fails_at_once(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        "def test_sync(keyvault_emulator):\n    assert False, 'never runs'\n"
    )
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nasyncio_mode = "auto"\n'
        'asyncio_default_fixture_loop_scope = "function"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # did not hang (it used to wait ~32 s per request on the SDK's retries)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "use keyvault_emulator_sync" in result.stdout.lower()
    assert "never runs" not in result.stdout
