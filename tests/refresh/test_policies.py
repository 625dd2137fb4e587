"""Pinned versions, deleted/disabled secrets, expiry and not-yet-valid versions."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import Secret, SettingsValidationError
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory
from tests.refresh.helpers import next_second, secret_gets


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVCONFIG_REFRESH_TEST_")

    api_key: str
    region: str = "west"
    port: int = 8080


SEED = {"api-key": "key-1", "region": "north", "port": "9000"}


@pytest.mark.parametrize("tracked", [1, 3])
async def test_pinned_version_is_never_read_again(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, tracked: int
) -> None:
    """Neither GET mode (1 tracked) nor list mode (3 tracked) re-reads a pinned secret."""
    emu = keyvault_emulator
    emu.seed(SEED)
    pinned = emu.set_secret("signing-key", "sk-1")

    class Pinned(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="KVCONFIG_REFRESH_TEST_")
        signing_key: Annotated[str, Secret(version=pinned)]
        api_key: str
        region: str = "west"
        port: int = 8080

    class PinnedOne(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="KVCONFIG_REFRESH_TEST_")
        signing_key: Annotated[str, Secret(version=pinned)]
        api_key: str

    cls = PinnedOne if tracked == 1 else Pinned
    async with make_vault() as vault, vault.watch(cls, interval=60) as live:
        emu.set_secret("signing-key", "sk-2")
        emu.set_secret("api-key", "key-2")
        emu.clear_requests()
        for _ in range(3):
            await live.refresh()
        assert live.current.signing_key == "sk-1"
        assert live.current.api_key == "key-2"
        assert not any(path.startswith("signing-key") for path in secret_gets(emu))
        assert live.health.mode == ("get" if tracked == 1 else "list")


@pytest.mark.parametrize("how", ["deleted", "disabled"])
async def test_missing_secret_keeps_last_known_good_by_default(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    """on_missing='keep': the value stays, one warning, no new generation."""
    emu = keyvault_emulator
    emu.seed(SEED)
    caplog.set_level(logging.WARNING, logger="kvconfig")
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        if how == "deleted":
            emu.delete_secret("region")
        else:
            emu.update_secret("region", enabled=False)
        assert await live.refresh() is None
        assert await live.refresh() is None
        assert live.current.region == "north"
        assert live.generation == 0
        assert live.health.consecutive_failures == 0
    assert caplog.text.count(f"is now {how}; keeping its last-known-good") == 1


@pytest.mark.parametrize("mode", ["list", "get"])
async def test_missing_secret_falls_back_to_default_when_asked(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, mode: str
) -> None:
    """on_missing='default': the field's default is published; re-enabling brings it back."""

    class One(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="KVCONFIG_REFRESH_TEST_")
        region: str = "west"

    cls = AppSettings if mode == "list" else One
    emu = keyvault_emulator
    emu.seed(SEED)
    async with (
        make_vault() as vault,
        vault.watch(cls, interval=60, on_missing="default") as live,
    ):
        assert live.health.mode == mode
        emu.update_secret("region", enabled=False)
        change = await live.refresh()
        assert change is not None and change.fields == ("region",)
        [secret] = change.secrets
        assert (secret.name, secret.new_version) == ("region", None)
        assert live.current.region == "west"
        emu.update_secret("region", enabled=True)
        await live.refresh()
        assert live.current.region == "north"
        emu.delete_secret("region")
        await live.refresh()
        assert live.current.region == "west"


async def test_missing_required_secret_is_never_published(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """on_missing='default' on a required field: validation fails, the old value stays."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=60, on_missing="default") as live,
    ):
        emu.update_secret("api-key", enabled=False)
        with pytest.raises(SettingsValidationError, match="api_key"):
            await live.refresh()
        assert live.current.api_key == "key-1"


async def test_expired_version_in_use_warns_once(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rotation to an already expired version is used, with one warning per version."""
    emu = keyvault_emulator
    emu.seed(SEED)
    caplog.set_level(logging.WARNING, logger="kvconfig")
    past = datetime.now(UTC) - timedelta(days=1)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        version = emu.set_secret("api-key", "key-2", expires_on=past)
        await live.refresh()
        await live.refresh()
        assert live.current.api_key == "key-2"
    assert caplog.text.count(f"(version {version}, in use) expired") == 1


async def test_secret_about_to_expire_shortens_the_wait(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """The next check is scheduled shortly before a secret in use expires."""
    emu = keyvault_emulator
    emu.seed(SEED)
    soon = datetime.now(UTC) + timedelta(seconds=120)
    emu.set_secret("port", "9001", expires_on=soon)
    async with make_vault() as vault, vault.watch(AppSettings, interval=3600) as live:
        delay = live._next_delay()
        assert 80 < delay < 91  # 30 s before expiry, not ~3600 s
        emu.set_secret("port", "9002")  # rotated before expiry: back to the interval
        await live.refresh()
        assert live._next_delay() > 3000


async def test_not_yet_valid_version_is_ignored_until_valid(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A version valid only from a future second is not used before then; a refresh scheduled
    for its not_before publishes it."""
    emu = keyvault_emulator
    emu.seed(SEED)
    caplog.set_level(logging.WARNING, logger="kvconfig")
    async with make_vault() as vault, vault.watch(AppSettings, interval=60, clock_skew=0) as live:
        await next_second()
        not_before = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        emu.set_secret("api-key", "key-2", not_before=not_before)
        assert await live.refresh() is None
        assert live.current.api_key == "key-1"
        assert "not valid before" in caplog.text
        wait = live._detector.next_check_in(0.0) if live._detector else None
        assert wait is not None and wait <= 1.0
        await asyncio.sleep(wait + 0.05)
        change = await live.refresh()
        assert change is not None and live.current.api_key == "key-2"


async def test_not_yet_valid_version_accepted_when_asked(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """not_yet_valid='accept' publishes the new version at once."""
    emu = keyvault_emulator
    emu.seed(SEED)
    later = datetime.now(UTC) + timedelta(hours=1)
    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=60, not_yet_valid="accept") as live,
    ):
        emu.set_secret("api-key", "key-2", not_before=later)
        assert await live.refresh() is not None
        assert live.current.api_key == "key-2"


async def test_rotation_within_the_same_second_is_not_missed(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """updated_on counts whole seconds: a rotation right after the load (same second) must still
    be seen in list mode, at the price of re-reading the not-yet-settled secrets."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        assert live.health.mode == "list"
        emu.set_secret("api-key", "key-2")
        await live.refresh()
        assert live.current.api_key == "key-2"
