"""``LiveSettings.notify``: the emulator's real Event Grid deliveries, through the ready-made
endpoint, re-read exactly the rotated secret (one GET, no list pass) and publish it; expiry
events surface in ``health``; the scheduler lives and dies with the watcher."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import ClosedError, EventFormatError, LiveSettings
from kvconfig.emulator import KeyVaultEmulator
from kvconfig.integrations.eventgrid import aiohttp_handler
from tests.conftest import VaultFactory


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVCONFIG_NOTIFY_TEST_")

    db_password: SecretStr
    api_key: str
    port: int = 8080


SEED = {"db-password": "pw-notify-1", "api-key": "key-notify-1", "port": "9000"}
HOUR = 3600.0  # the safety poll: never due during a test


def event(emu: KeyVaultEmulator, name: str, version: str, kind: str = "NewVersionCreated") -> Any:
    """An Event Grid event as Key Vault publishes it (no value)."""
    return {
        "id": f"id-{name}-{version}",
        "eventType": f"Microsoft.KeyVault.Secret{kind}",
        "subject": name,
        "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.KeyVault/vaults/v",
        "eventTime": "2026-01-01T00:00:00Z",
        "dataVersion": "1",
        "metadataVersion": "1",
        "data": {
            "Id": f"{emu.vault_url}/secrets/{name}/{version}",
            "VaultName": "v",
            "ObjectType": "Secret",
            "ObjectName": name,
            "Version": version,
        },
    }


def value_gets(emu: KeyVaultEmulator, since: int = 0) -> list[str]:
    """Authenticated secret GET paths from request ``since`` on."""
    return [
        r.path
        for r in emu.requests[since:]
        if r.method == "GET" and r.status != 401 and r.path.startswith("/secrets/")
    ]


def lists(emu: KeyVaultEmulator, since: int = 0) -> int:
    return sum(
        1
        for r in emu.requests[since:]
        if r.method == "GET" and r.status != 401 and r.path == "/secrets"
    )


@contextlib.asynccontextmanager
async def endpoint(*targets: Any) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/events", aiohttp_handler(list(targets)))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/events"
    finally:
        await runner.cleanup()


async def next_change(live: LiveSettings[AppSettings], generation: int) -> None:
    async with asyncio.timeout(10):  # "did not hang"
        while live.generation < generation:  # noqa: ASYNC110 - the condition is the point
            await asyncio.sleep(0.01)


async def test_event_grid_delivery_rereads_one_secret_and_publishes(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    emu = keyvault_emulator
    emu.seed(SEED)
    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=HOUR, notify_max_delay=0.05) as a,
        vault.watch(AppSettings, interval=HOUR, notify_max_delay=0.05) as b,
        endpoint(a, b) as url,
    ):
        await emu.subscribe(url, event_types=["Microsoft.KeyVault.SecretNewVersionCreated"])
        start = len(emu.requests)
        emu.set_secret("db-password", "pw-notify-2")
        await next_change(a, 1)
        await next_change(b, 1)
        await emu.events_idle()
        assert a.current.db_password.get_secret_value() == "pw-notify-2"
        assert b.current.db_password.get_secret_value() == "pw-notify-2"
        # At most one GET per watcher of the rotated secret only (two watchers of one vault share
        # a request when their random delays overlap); no list pass between safety polls.
        gets = value_gets(emu, start)
        assert set(gets) == {"/secrets/db-password/"} and 1 <= len(gets) <= 2
        assert lists(emu, start) == 0
        assert a.health.push_rereads == 1 and a.health.healthy
        assert a.notify_max_delay == 0.05


async def test_ignored_events_cost_no_request(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    emu = keyvault_emulator
    held = emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=HOUR) as live:
        start = len(emu.requests)
        other = event(emu, "db-password", "f" * 32)
        other["data"]["Id"] = "https://elsewhere.vault.azure.net/secrets/db-password/" + "f" * 32
        result = live.notify(
            [
                other,  # another vault
                event(emu, "unrelated", "a" * 32),  # not watched
                event(emu, "db-password", held["db-password"]),  # already held
                {"eventType": "Microsoft.KeyVault.KeyNewVersionCreated", "data": {}},  # a key
            ]
        )
        assert result.scheduled == frozenset() and result.ignored == 3
        with pytest.raises(EventFormatError):
            live.notify(b"not json")
        await asyncio.sleep(0.05)
        assert value_gets(emu, start) == [] and live.health.push_pending == 0


async def test_forged_event_costs_one_get_and_changes_nothing(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    emu = keyvault_emulator
    emu.seed(SEED)
    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=HOUR, notify_max_delay=0.0) as live,
    ):
        start = len(emu.requests)
        forged = [event(emu, "DB-PASSWORD", "0" * 32) for _ in range(5)]  # repeats coalesce
        assert live.notify(forged).scheduled == {"DB-PASSWORD"}
        async with asyncio.timeout(10):
            while live.health.push_rereads < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert value_gets(emu, start) == ["/secrets/db-password/"]
        assert live.generation == 0
        assert live.current.db_password.get_secret_value() == "pw-notify-1"


async def test_invalid_pushed_value_keeps_last_known_good(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    emu = keyvault_emulator
    emu.seed(SEED)
    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=HOUR, notify_max_delay=0.0) as live,
    ):
        version = emu.set_secret("port", "not-a-port")
        live.notify([event(emu, "port", version)])
        async with asyncio.timeout(10):
            while not live.health.degraded:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        [issue] = live.health.issues
        assert (issue.kind, issue.secret, issue.version) == ("rejected", "port", version)
        assert live.current.port == 9000 and live.generation == 0
        assert "SettingsValidationError" in (live.health.last_error or "")
        assert "not-a-port" not in repr(live.health)


async def test_expiry_events_surface_in_health_and_logs(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emu = keyvault_emulator
    emu.seed(SEED)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    emu.set_secret("api-key", "key-notify-1", expires_on=soon)
    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=HOUR) as live,
        endpoint(live) as url,
    ):
        await emu.subscribe(url)
        start = len(emu.requests)
        with caplog.at_level(logging.WARNING, logger="kvconfig"):
            assert emu.scan_expiry() >= 1
            await emu.events_idle()
            await asyncio.sleep(0.05)  # the endpoint hands events to the loop
        assert live.health.near_expiry == ("api-key",)
        assert live.health.expired == ()
        assert any("SecretNearExpiry" in r.getMessage() for r in caplog.records)
        assert value_gets(emu, start) == []  # an expiry event triggers no request
        emu.scan_expiry(soon + dt.timedelta(days=1))
        await emu.events_idle()
        await asyncio.sleep(0.05)
        assert live.health.expired == ("api-key",)
        # Rotated since: the notice is about a version no longer in use.
        emu.set_secret("api-key", "key-notify-2")
        await live.refresh()
        assert live.health.expired == () and live.health.near_expiry == ()


async def test_lifecycle_of_the_scheduler(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault:
        live = vault.watch(AppSettings, interval=HOUR, notify_max_delay=HOUR)
        with pytest.raises(ClosedError):
            live.notify([])
        async with live:
            assert live.notify([event(emu, "db-password", "1" * 32)]).scheduled
            assert live.health.push_pending == 1
            [push] = live._pushes.values()
            assert push._task is not None
        assert push._task is None  # cancelled and awaited with the watcher
        assert live.notify([event(emu, "db-password", "2" * 32)]).ignored == 1
        assert not any(t.get_name() == "kvconfig-push" for t in asyncio.all_tasks())


def test_sync_live_settings_notify_from_another_thread(
    keyvault_emulator_sync: KeyVaultEmulator,
) -> None:
    from kvconfig import SyncKeyVault

    emu = keyvault_emulator_sync
    emu.seed(SEED)
    vault = SyncKeyVault(emu.vault_url, emu.sync_credential(), ca_file=emu.ca_file)
    with vault, vault.watch(AppSettings, interval=HOUR, notify_max_delay=0.0) as live:
        version = emu.set_secret("db-password", "pw-notify-sync")
        errors: list[BaseException] = []

        def deliver() -> None:
            try:
                live.notify([event(emu, "db-password", version)])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        worker = threading.Thread(target=deliver)
        worker.start()
        worker.join(10)
        assert not errors
        deadline = 10.0
        while live.generation < 1 and deadline > 0:
            threading.Event().wait(0.01)
            deadline -= 0.01
        assert live.current.db_password.get_secret_value() == "pw-notify-sync"
    assert live.notify([event(emu, "db-password", "3" * 32)]).ignored == 1
