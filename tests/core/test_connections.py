"""Connections a load opens, counted from the emulator's side (one ``peer`` per connection).

The raw floor (bench/bench_load.py) sends the 401 challenge, then its K GETs at once: K
connections (the challenge's is reused). kvconfig must open no more: the priming request's
challenge and authorised re-send share one connection, the fan-out opens one per request still
in flight, never more than ``max_concurrency``, and a later load reuses the pool.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from pydantic import create_model
from pydantic_settings import BaseSettings

from kvconfig import KeyVault, VaultAuthenticationError
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory


def _settings(count: int) -> type[BaseSettings]:
    fields: dict[str, Any] = {f"s{i}": (str, ...) for i in range(count)}
    return create_model(f"Settings{count}", __base__=BaseSettings, **fields)


def _peers(emu: KeyVaultEmulator) -> set[str]:
    peers = {r.peer for r in emu.requests}
    assert "" not in peers
    return peers


@pytest.mark.parametrize("count", [1, 2, 5, 12])
async def test_cold_load_opens_no_more_connections_than_the_raw_floor(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, count: int
) -> None:
    keyvault_emulator.seed({f"s{i}": "v" for i in range(count)})
    vault = make_vault(ttl=0)
    settings_cls = _settings(count)
    await vault.load(settings_cls)
    statuses = [r.status for r in keyvault_emulator.requests]
    assert statuses.count(401) == 1 and statuses.count(200) == count
    first = _peers(keyvault_emulator)
    assert len(first) <= count
    if count == 1:
        assert len(first) == 1  # the challenge's connection carries the authorised re-send
    keyvault_emulator.clear_requests()
    await vault.load(settings_cls)  # warm: the pool is reused, nothing new is opened
    assert _peers(keyvault_emulator) <= first


async def test_connections_never_exceed_max_concurrency(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed({f"s{i}": "v" for i in range(40)})
    await make_vault(max_concurrency=4).load(_settings(40))
    assert len(keyvault_emulator.requests) == 41
    assert len(_peers(keyvault_emulator)) <= 4


class _RefusedCredential:
    """Hands out a token the vault refuses (401), as a revoked identity's would be."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("not-a-token", 2**31)

    async def close(self) -> None:
        pass


def test_failed_loads_under_asyncio_run_leave_no_connection_open(
    keyvault_emulator_sync: KeyVaultEmulator,
) -> None:
    """A 401 while other GETs are on the wire, in a script's ``asyncio.run``: when the vault
    is closed, every connection is, before the loop goes away. Regression: the other GETs were
    cancelled mid-connect, leaving TLS closes nobody finished (an unclosed socket)."""
    emu = keyvault_emulator_sync
    emu.seed({f"s{i}": "v" for i in range(6)})
    settings_cls = _settings(6)

    async def load_once() -> None:
        async with KeyVault(emu.vault_url, _RefusedCredential(), ca_file=emu.ca_file) as vault:
            with pytest.raises(VaultAuthenticationError):
                await vault.load(settings_cls)

    for _ in range(25):
        asyncio.run(load_once())
        gc.collect()  # an unclosed socket is a ResourceWarning, an error here
