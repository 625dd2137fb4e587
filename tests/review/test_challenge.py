"""Issue 9 item 15: the challenge-resource refusal, provoked through the emulator; other SDK
ValueErrors are classified, their text never shown."""

from __future__ import annotations

import ssl

import pytest
from pydantic_settings import BaseSettings

from kvconfig import KeyVault, VaultAuthenticationError
from kvconfig._translate import Outcome, classify
from kvconfig.emulator import KeyVaultEmulator


class AlphaOnly(BaseSettings):
    alpha: str


async def test_challenge_for_another_resource_is_refused(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    """0.0.0.0 reaches the loopback emulator but is not a loopback name, so the SDK checks the
    challenge's resource (vault.azure.net) against the host, and refuses it."""
    keyvault_emulator.seed({"alpha": "a"})
    relaxed = ssl.create_default_context(cafile=str(keyvault_emulator.ca_file))
    relaxed.check_hostname = False  # the certificate names 127.0.0.1, not 0.0.0.0
    port = keyvault_emulator.vault_url.rsplit(":", 1)[1]
    async with KeyVault(
        f"https://0.0.0.0:{port}", keyvault_emulator.credential(), ssl_context=relaxed
    ) as vault:
        with pytest.raises(VaultAuthenticationError, match="challenge"):
            await vault.load(AlphaOnly)


def test_other_sdk_value_errors_are_classified_without_their_text() -> None:
    secret_text = "WWW-Authenticate: Basic realm=CANARY"
    verdict = classify(
        ValueError(secret_text), vault_url="https://x.vault.azure.net", secret_name="a"
    )
    assert verdict is not None and verdict.outcome is Outcome.PERMANENT
    assert isinstance(verdict.error, VaultAuthenticationError)
    assert "CANARY" not in str(verdict.error)
