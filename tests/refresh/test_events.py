"""Change events: awaited callbacks in order, ``changes()`` iteration, background pickup."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import ChangeEvent
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory
from tests.refresh.helpers import SEED, AppSettings, until


async def test_async_callbacks_are_awaited_in_order(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """Async callbacks are awaited one at a time, after the refresh; generations in order."""
    emu = keyvault_emulator
    emu.seed(SEED)
    seen: list[int] = []

    async def on_change(event: ChangeEvent) -> None:
        await asyncio.sleep(0.01)
        seen.append(event.generation)

    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=60, on_change=on_change) as live,
    ):
        for n in range(1, 4):
            emu.set_secret("port", str(9000 + n))
            await live.refresh()
            await until(lambda n=n: seen == list(range(1, n + 1)))  # type: ignore[misc]


async def test_sync_callback_and_failing_callback(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sync callback is called; a failing one is logged and does not stop publishing."""
    emu = keyvault_emulator
    emu.seed(SEED)
    calls: list[tuple[str, ...]] = []

    def on_change(event: ChangeEvent) -> None:
        calls.append(event.fields)
        raise RuntimeError("callback bug")

    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=60, on_change=on_change) as live,
    ):
        emu.set_secret("api-key", "key-2")
        change = await live.refresh()
        assert change is not None
        emu.set_secret("api-key", "key-3")
        await live.refresh()
        await until(lambda: len(calls) == 2)
        assert calls == [("api_key",), ("api_key",)]
        assert live.current.api_key == "key-3"
        assert live.health.consecutive_failures == 0
    assert "on_change callback" in caplog.text and "RuntimeError" in caplog.text


async def test_changes_iterator_sees_each_generation_then_ends(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """An iterator created before two changes yields both, in order, and ends on exit."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault:
        async with vault.watch(AppSettings, interval=60) as live:
            stream = live.changes()
            late: list[ChangeEvent] = []
            for n in (1, 2):
                emu.set_secret("port", str(9000 + n))
                await live.refresh()
            events = [await anext(stream), await anext(stream)]
            assert [e.generation for e in events] == [1, 2]
            assert all(e.fields == ("port",) for e in events)
            later = live.changes()  # created after both: sees neither
            emu.set_secret("port", "9100")
            await live.refresh()
            assert (await anext(later)).generation == 3
            assert (await anext(stream)).generation == 3
        late = [event async for event in stream]  # closed: the iterator ends
        assert late == []


async def test_changes_consumer_in_a_task_sees_background_refreshes(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """The background task picks a rotation up within a couple of refreshes, with no explicit
    refresh() call; `async for` over changes() receives it, and breaking unsubscribes."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=0.05) as live:
        received: list[ChangeEvent] = []

        async def consume() -> None:
            async for event in live.changes():
                received.append(event)
                break

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)  # let the consumer subscribe
        before = live.health.refreshes
        emu.set_secret("db-password", "pw-2")
        await asyncio.wait_for(consumer, timeout=10)
        assert [e.fields for e in received] == [("db_password",)]
        assert live.current.db_password.get_secret_value() == "pw-2"
        # Picked up by the first or second background refresh after the rotation.
        assert live.health.refreshes - before <= 2
        gc.collect()
        assert len(live._streams) == 0


async def test_slow_consumer_loses_oldest_events_not_memory(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A consumer that never reads holds a bounded queue (the oldest events are dropped)."""
    emu = keyvault_emulator
    emu.seed(SEED)
    caplog.set_level(logging.WARNING, logger="kvconfig")
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        stream = live.changes()
        stream._maxsize = 2
        for n in range(1, 5):
            emu.set_secret("port", str(9000 + n))
            await live.refresh()
        assert [(await anext(stream)).generation for _ in range(2)] == [3, 4]
        assert stream.dropped == 2
    assert "behind" in caplog.text


async def test_concurrent_refreshes_share_one_request_set(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """Three concurrent refresh() calls make one refresh: same event, one set of requests."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        emu.set_secret("api-key", "key-2")
        emu.clear_requests()
        first, second, third = await asyncio.gather(live.refresh(), live.refresh(), live.refresh())
        assert first is not None and first is second is third
        assert live.generation == 1
        assert sum(1 for r in emu.requests if r.path == "/secrets") == 1


async def test_event_names_nested_fields_and_env_overrides_hide_nothing(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A nested secret's change is reported by its dotted field path; a rotated secret whose
    field the environment overrides changes no value, so nothing is published."""

    class Database(BaseModel):
        host: str
        password: SecretStr

    class Nested(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix="KVCONFIG_REFRESH_TEST_", env_nested_delimiter="__"
        )
        database: Database
        api_key: str

    emu = keyvault_emulator
    emu.seed({"database--host": "db1", "database--password": "pw-1", "api-key": "key-1"})
    monkeypatch.setenv("KVCONFIG_REFRESH_TEST_API_KEY", "from-env")
    async with make_vault() as vault, vault.watch(Nested, interval=60) as live:
        assert live.current.api_key == "from-env"
        emu.set_secret("database--password", "pw-2")
        change = await live.refresh()
        assert change is not None
        assert change.fields == ("database.password",)
        assert [s.name for s in change.secrets] == ["database--password"]
        emu.set_secret("api-key", "key-2")
        assert await live.refresh() is None
        assert live.generation == 1
