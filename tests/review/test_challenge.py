"""Issue 9 item 15: the challenge-resource refusal, provoked through the emulator; other SDK
ValueErrors are classified, their text never shown; a CAE claims challenge is answered."""

from __future__ import annotations

import json
import ssl
from typing import Any

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


class RecordingCredential:
    """The emulator's credential, recording the claims each token was asked with."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.claims: list[str | None] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.claims.append(kwargs.get("claims"))
        return await self._inner.get_token(*scopes, **kwargs)

    async def close(self) -> None:
        await self._inner.close()


@pytest.mark.parametrize("path", ["direct", "pipeline"])
async def test_a_cae_claims_challenge_gets_a_new_token_and_the_load_succeeds(
    keyvault_emulator: KeyVaultEmulator, path: str
) -> None:
    """Entra revoked the session of a CAE token the client holds: Key Vault answers 401 with a
    claims challenge; the load asks the credential for a token with those claims and retries
    once, on the direct GET path (a warm client) and through the SDK pipeline (the first GET of
    a client whose token is cached) alike. One 401, nothing surfaces to the caller."""
    emu = keyvault_emulator
    emu.seed({"alpha": "a", "beta": "b"})
    credential = RecordingCredential(emu.credential())
    async with KeyVault(emu.vault_url, credential, ca_file=emu.ca_file, ttl=0) as vault:
        await vault.load(AlphaOnly)
        if path == "direct":
            await vault.load(AlphaOnly)  # the direct path now holds the Authorization header
        emu.clear_requests()
        emu.faults.claims_challenge()
        assert (await vault.load(AlphaOnly)).alpha == "a"
    assert [r.status for r in emu.requests] == [401, 200]
    assert credential.claims[0] is None and len(credential.claims) == 2
    asked = json.loads(credential.claims[1] or "{}")
    assert asked["access_token"]["nbf"]["essential"] is True
