"""Issue 9 item 7: on_change runs after the refresh, on a dispatcher, bounded."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kvconfig import ChangeEvent
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory
from tests.refresh.helpers import SEED, AppSettings, until


async def test_refresh_returns_while_a_slow_callback_still_runs(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed(SEED)
    release = asyncio.Event()
    done: list[int] = []

    async def on_change(event: ChangeEvent) -> None:
        await release.wait()
        done.append(event.generation)

    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=60, on_change=on_change) as live,
    ):
        keyvault_emulator.set_secret("port", "9001")
        event = await asyncio.wait_for(live.refresh(), 5)  # before the fix: waits for release
        assert event is not None and live.generation == 1 and done == []
        keyvault_emulator.set_secret("port", "9002")
        await asyncio.wait_for(live.refresh(), 5)
        release.set()
        await until(lambda: done == [1, 2])


async def test_callback_awaiting_refresh_does_not_deadlock(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed(SEED)
    inner: list[ChangeEvent | None] = []

    async with make_vault() as vault:

        async def on_change(event: ChangeEvent) -> None:
            inner.append(await live.refresh())

        async with vault.watch(AppSettings, interval=60, on_change=on_change) as live:
            keyvault_emulator.set_secret("port", "9001")
            await asyncio.wait_for(live.refresh(), 5)
            await until(lambda: len(inner) == 1)
            assert inner == [None]  # nothing changed since


async def test_hung_callback_is_abandoned_and_logged(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keyvault_emulator.seed(SEED)
    delivered: list[int] = []

    async def on_change(event: ChangeEvent) -> None:
        delivered.append(event.generation)
        if event.generation == 1:
            await asyncio.Event().wait()  # hangs for ever

    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=60, on_change=on_change, on_change_timeout=0.1) as live,
    ):
        with caplog.at_level(logging.ERROR, logger="kvconfig"):
            for port in ("9001", "9002"):
                keyvault_emulator.set_secret("port", port)
                await asyncio.wait_for(live.refresh(), 5)
            await until(lambda: delivered == [1, 2])
    assert "abandoned" in caplog.text
