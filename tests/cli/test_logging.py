"""The ``kvconfig`` logger as the CLI and an operator see it: one INFO line per load and per
refresh (changed or not), DEBUG per secret, WARNING for disabled, expired and deleted secrets;
never a value."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from kvconfig import KeyVault
from kvconfig.emulator import KeyVaultEmulator

VALUES = {
    "db-password": "pw-value-0a1",
    "api-key": "api-value-b2c",
    "old-token": "old-value-3de",
    "signing-key": "sign-value-f45",
}


class Service(BaseSettings):
    db_password: SecretStr
    api_key: SecretStr
    old_token: SecretStr | None = None
    signing_key: SecretStr
    region: str = "westeurope"


def kvconfig_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("kvconfig")]


def assert_no_values(records: list[logging.LogRecord]) -> None:
    for record in records:
        message = record.getMessage()
        for value in [*VALUES.values(), "rotated-value-9"]:
            assert value not in message


@pytest.fixture
def seeded(keyvault_emulator: KeyVaultEmulator) -> KeyVaultEmulator:
    keyvault_emulator.seed({k: v for k, v in VALUES.items() if k != "signing-key"})
    keyvault_emulator.update_secret("old-token", enabled=False)
    keyvault_emulator.set_secret(
        "signing-key", VALUES["signing-key"], expires_on=datetime.now(UTC) - timedelta(days=1)
    )
    return keyvault_emulator


async def test_load_logs_one_info_line_debug_per_secret_and_warnings(
    seeded: KeyVaultEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kvconfig")
    async with KeyVault(seeded.vault_url, seeded.credential(), ca_file=seeded.ca_file) as vault:
        await vault.load(Service)

    records = kvconfig_records(caplog)
    infos = [r for r in records if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert infos[0].getMessage().startswith(f"loaded Service from {seeded.vault_url}: 5 secrets")
    assert "3 found, 1 missing, 1 disabled" in infos[0].getMessage()
    debug = " ".join(r.getMessage() for r in records if r.levelno == logging.DEBUG)
    for name in ("db-password", "api-key", "old-token", "signing-key", "region"):
        assert f"secret {name} " in debug
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert any("old-token" in w and "disabled" in w for w in warnings)
    assert any("signing-key" in w and "expired" in w for w in warnings)
    assert_no_values(records)


async def test_refresh_logs_the_generation_and_warns_about_a_deleted_secret(
    seeded: KeyVaultEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        KeyVault(seeded.vault_url, seeded.credential(), ca_file=seeded.ca_file) as vault,
        vault.watch(Service, interval=3600) as live,
    ):
        caplog.clear()
        caplog.set_level(logging.DEBUG, logger="kvconfig")
        seeded.set_secret("api-key", "rotated-value-9")
        event = await live.refresh()
        assert event is not None and event.fields == ("api_key",)
        changed = kvconfig_records(caplog)

        caplog.clear()
        seeded.delete_secret("db-password")
        await live.refresh()
        deleted = kvconfig_records(caplog)

    infos = [r.getMessage() for r in changed if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert infos[0].startswith(f"refreshed Service from {seeded.vault_url}: generation 1")
    assert any(r.levelno == logging.DEBUG and "api-key" in r.getMessage() for r in changed)
    warnings = [r.getMessage() for r in deleted if r.levelno == logging.WARNING]
    assert any("db-password" in w for w in warnings), warnings
    # Nothing published (the deleted secret keeps its last-known-good): still one INFO line.
    kept = [r.getMessage() for r in deleted if r.levelno == logging.INFO]
    assert len(kept) == 1
    assert kept[0].startswith(f"refreshed Service from {seeded.vault_url}: generation 1 kept")
    assert_no_values(changed + deleted)
