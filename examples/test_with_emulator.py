"""Test your own service against a local Key Vault: the ``keyvault_emulator`` pytest fixture.

Installing kvconfig registers its pytest plugin (entry point ``pytest11``): with pytest-asyncio
installed, every test can ask for ``keyvault_emulator``, a fresh emulator per test (real TLS,
the real Azure SDK; the CA is generated once per session). Nothing is mocked.

Copy this file next to your tests and replace ``PaymentSettings``/``load_settings`` with an
import of your own code. Run ``pytest test_with_emulator.py``: no ``-p`` option and no conftest
are needed. pytest-asyncio asks projects to choose a fixture loop scope; in ``pyproject.toml``::

    [tool.pytest.ini_options]
    asyncio_default_fixture_loop_scope = "function"
    asyncio_mode = "auto"   # optional: then the pytestmark line below can go
"""

from __future__ import annotations

import os

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from kvconfig import KeyVault, MissingSettingError
from kvconfig.emulator import KeyVaultEmulator

pytestmark = pytest.mark.asyncio  # pytest-asyncio's default "strict" mode wants the marker


# -- the code under test (in a real project: from myservice.settings import ...) ------------


class PaymentSettings(BaseSettings):
    """A payment service's configuration."""

    stripe_key: SecretStr  # secret "stripe-key"
    webhook_secret: SecretStr  # secret "webhook-secret"
    currency: str = "EUR"  # secret "currency", else the default


async def load_settings(vault: KeyVault) -> PaymentSettings:
    """How the service loads its settings at startup."""
    return await vault.load(PaymentSettings)


# -- the tests ----------------------------------------------------------------------------------


def vault_for(emu: KeyVaultEmulator) -> KeyVault:
    """A KeyVault on the emulator: only the URL, the credential and the CA differ from prod."""
    return KeyVault(emu.vault_url, emu.credential(), ca_file=emu.ca_file)


async def test_settings_come_from_the_vault(keyvault_emulator: KeyVaultEmulator) -> None:
    keyvault_emulator.seed({"stripe-key": "sk_test_123", "webhook-secret": "whsec_456"})

    async with vault_for(keyvault_emulator) as vault:
        settings = await load_settings(vault)

    assert settings.stripe_key.get_secret_value() == "sk_test_123"
    assert settings.currency == "EUR"  # no "currency" secret: the default
    # The emulator logs every request: 1 auth challenge + one GET per field.
    assert len(keyvault_emulator.requests) == 4


@pytest.mark.keyvault_secrets({"stripe-key": "sk_1", "webhook-secret": "wh_1", "currency": "USD"})
async def test_seeding_with_the_marker(keyvault_emulator: KeyVaultEmulator) -> None:
    async with vault_for(keyvault_emulator) as vault:
        settings = await load_settings(vault)
    assert settings.currency == "USD"


async def test_an_environment_variable_wins_over_the_vault(
    keyvault_emulator: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyvault_emulator.seed({"stripe-key": "sk_1", "webhook-secret": "wh_1", "currency": "USD"})
    monkeypatch.setenv("CURRENCY", "GBP")
    async with vault_for(keyvault_emulator) as vault:
        settings = await load_settings(vault)
    assert settings.currency == "GBP" and os.environ["CURRENCY"] == "GBP"


async def test_a_missing_secret_fails_startup_by_name(keyvault_emulator: KeyVaultEmulator) -> None:
    keyvault_emulator.seed({"stripe-key": "sk_1"})
    async with vault_for(keyvault_emulator) as vault:
        with pytest.raises(MissingSettingError, match="webhook_secret") as error:
            await load_settings(vault)
    assert "sk_1" not in str(error.value)  # messages name fields and secrets, never values


async def test_transient_vault_errors_are_retried(keyvault_emulator: KeyVaultEmulator) -> None:
    keyvault_emulator.seed({"stripe-key": "sk_1", "webhook-secret": "wh_1"})
    keyvault_emulator.faults.fail_next(2, status=503)  # the vault hiccups twice

    async with vault_for(keyvault_emulator) as vault:
        settings = await load_settings(vault)

    assert settings.stripe_key.get_secret_value() == "sk_1"
    assert [r.status for r in keyvault_emulator.requests].count(503) == 2


async def test_rotation_with_the_real_sdk(keyvault_emulator: KeyVaultEmulator) -> None:
    keyvault_emulator.seed({"stripe-key": "sk_old", "webhook-secret": "wh_1"})
    async with keyvault_emulator.secret_client() as client:  # the aio SecretClient
        await client.set_secret("stripe-key", "sk_new")

    async with vault_for(keyvault_emulator) as vault:
        settings = await load_settings(vault)
    assert settings.stripe_key.get_secret_value() == "sk_new"
