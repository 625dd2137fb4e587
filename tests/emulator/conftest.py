"""Helpers for the emulator's own tests: a raw HTTPS session with a valid token, a threaded
emulator for the sync SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from emulator_helpers import Raw

from kvconfig.emulator import CertificateAuthority, EmulatorThread, KeyVaultEmulator


@pytest.fixture
async def raw(keyvault_emulator: KeyVaultEmulator) -> AsyncIterator[Raw]:
    async with (
        keyvault_emulator.credential() as credential,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=keyvault_emulator.ssl_context())
        ) as session,
    ):
        token = (await credential.get_token("https://vault.azure.net/.default")).token
        yield Raw(keyvault_emulator, session, token)


@pytest.fixture
def emulator_thread(keyvault_ca: CertificateAuthority) -> Iterator[KeyVaultEmulator]:
    """An emulator served from a background thread, for the blocking sync SecretClient."""
    with EmulatorThread(ca=keyvault_ca) as emu:
        yield emu
