"""Issue 9 item 12: list mode and GET mode classify failures the same way."""

from __future__ import annotations

import asyncio
import logging

import pytest

import kvconfig._refresh._detect
from kvconfig import ClosedError, MalformedResponseError, VaultAuthenticationError
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory
from tests.refresh.helpers import SEED, AppSettings, list_requests, secret_gets


async def test_401_on_the_list_is_an_authentication_error(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        assert live.health.mode == "list"
        keyvault_emulator.faults.fail_next(2, status=401)  # the SDK re-authenticates once
        with pytest.raises(VaultAuthenticationError):
            await live.refresh()


async def test_a_garbled_list_page_is_retried_not_read_as_an_empty_vault(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keyvault_emulator.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        good = live.current
        keyvault_emulator.faults.garble_next(1, "html")
        with caplog.at_level(logging.WARNING, logger="kvconfig"):
            assert await live.refresh() is None
        assert live.current is good and "deleted" not in caplog.text
        keyvault_emulator.faults.garble_next(1000, "truncate")
        with pytest.raises(MalformedResponseError):
            await live.refresh()
        keyvault_emulator.faults.clear()


async def test_absent_from_the_list_is_confirmed_with_one_get(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        keyvault_emulator.delete_secret("api-key")
        keyvault_emulator.clear_requests()
        await live.refresh()
        assert secret_gets(keyvault_emulator).get("api-key") == 1  # the confirming GET (404)
        keyvault_emulator.clear_requests()
        await live.refresh()
        assert "api-key" not in secret_gets(keyvault_emulator)  # known deleted: no more GETs
        assert live.current.api_key == "key-1"  # on_missing="keep"


async def test_forbidden_list_is_tried_again_later(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keyvault_emulator.seed(SEED)
    monkeypatch.setattr(kvconfig._refresh._detect, "LIST_RETRY_AFTER_FORBIDDEN", 0.0)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        keyvault_emulator.faults.fail_next(1, status=403)
        await live.refresh()  # the 403 switches this refresh to GETs
        keyvault_emulator.clear_requests()
        await live.refresh()
        assert list_requests(keyvault_emulator) == 1 and live.health.mode == "list"


async def test_closing_the_vault_during_a_list_pass_is_closed_error(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed(SEED)
    vault = make_vault()
    async with vault.watch(AppSettings, interval=60) as live:
        keyvault_emulator.faults.latency(300)
        pending = asyncio.ensure_future(live.refresh())
        await asyncio.sleep(0.1)
        await vault.aclose()
        with pytest.raises(ClosedError):
            await asyncio.wait_for(pending, 5)
