"""Entering, leaving and misuse: same errors as load(), no task left behind, no values shown."""

from __future__ import annotations

import asyncio
import logging

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import (
    ClosedError,
    ConfigurationError,
    KeyVault,
    LiveSettings,
    MissingSettingError,
    VaultPermissionError,
)
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVCONFIG_REFRESH_TEST_")

    db_password: SecretStr
    api_key: str
    port: int = 8080


def ours(tasks: set[asyncio.Task[object]]) -> list[str]:
    """kvconfig's tasks among ``tasks`` (the emulator's server tasks share the loop)."""
    names = [getattr(t.get_coro(), "__qualname__", "") for t in tasks]
    return [
        n for n in names if n.startswith(("LiveSettings.", "SecretFetcher.", "ChangeDetector."))
    ]


SEED = {"db-password": "pw-secret-1", "api-key": "key-secret-1", "port": "9000"}


async def test_no_task_or_session_left_after_exit(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """Leaving the block cancels and awaits the background task (and a refresh in flight)."""
    keyvault_emulator.seed(SEED)
    keyvault_emulator.faults.latency(50)
    before = asyncio.all_tasks()
    vault = make_vault()
    async with vault:
        async with vault.watch(AppSettings, interval=0.01) as live:
            assert live._task is not None and not live._task.done()
            assert "LiveSettings._run" in ours(asyncio.all_tasks())
            pending = asyncio.ensure_future(live.refresh())
            await asyncio.sleep(0.02)
        assert live.closed and live._task.done()
        assert live._inflight is None or live._inflight.done()
        with pytest.raises(ClosedError):
            await pending  # its caller was not cancelled: it learns why the refresh stopped
        assert live.current.api_key == "key-secret-1"  # still readable
        await live.aclose()  # idempotent
    assert ours(asyncio.all_tasks() - before) == []


async def test_enter_fails_like_load(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """A missing required secret or a refused request fails __aenter__; no task is started."""
    before = asyncio.all_tasks()
    async with make_vault(ttl=0) as vault:
        with pytest.raises(MissingSettingError):
            async with vault.watch(AppSettings, interval=0.01):
                pass
        keyvault_emulator.seed(SEED)
        keyvault_emulator.faults.fail_next(1, status=403)
        with pytest.raises(VaultPermissionError):
            async with vault.watch(AppSettings, interval=0.01):
                pass
    assert ours(asyncio.all_tasks() - before) == []


async def test_misuse_is_reported(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """Bad options fail at watch(); a closed watcher refuses refresh() and a second entry."""
    keyvault_emulator.seed(SEED)
    vault = make_vault()
    with pytest.raises(ConfigurationError):
        vault.watch(AppSettings, interval=0)
    with pytest.raises(ConfigurationError):
        vault.watch(AppSettings, on_missing="drop")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        vault.watch(AppSettings, not_yet_valid="maybe")  # type: ignore[arg-type]
    async with vault:
        live = vault.watch(AppSettings, interval=60)
        assert isinstance(live, LiveSettings)
        async with live:
            pass
        with pytest.raises(ClosedError):
            await live.refresh()
        with pytest.raises(ClosedError):
            async with live:
                pass
        assert [e async for e in live.changes()] == []
        assert not live.health.healthy


async def test_closing_the_vault_stops_the_watcher(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """If the vault is closed under a running watcher, its task ends with a warning."""
    keyvault_emulator.seed(SEED)
    vault = make_vault()
    async with vault.watch(AppSettings, interval=0.01) as live:
        await vault.aclose()
        assert live._task is not None
        await asyncio.wait_for(live._task, timeout=10)
        assert live.current.port == 9000
    assert "was closed; stopped refreshing" in caplog.text


async def test_values_never_reach_logs_events_or_health(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Rotations, failures and rejections at DEBUG: no secret value in any log line or repr."""
    emu = keyvault_emulator
    emu.seed(SEED)
    caplog.set_level(logging.DEBUG, logger="kvconfig")
    shown: list[str] = []
    vault = KeyVault(emu.vault_url, emu.credential(), ca_file=emu.ca_file)
    async with vault, vault.watch(AppSettings, interval=60) as live:
        emu.set_secret("db-password", "pw-secret-2")
        emu.set_secret("api-key", "key-secret-2")
        change = await live.refresh()
        shown += [repr(change), repr(live), repr(live.health)]
        emu.set_secret("port", "port-secret-3")
        with pytest.raises(Exception) as caught:
            await live.refresh()
        shown += [str(caught.value), repr(live.health)]
    text = caplog.text + "\n".join(shown)
    assert "refreshed AppSettings" in caplog.text
    for value in ("pw-secret", "key-secret", "port-secret"):
        assert value not in text
