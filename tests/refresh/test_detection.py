"""Requests per refresh: list pass vs per-secret GETs, counted from the emulator's log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory
from tests.refresh.helpers import list_requests, next_second, secret_gets, total_gets


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVCONFIG_REFRESH_TEST_")

    db_password: SecretStr
    api_key: str
    region: str = "west"
    port: int = 8080


def seed_app(emu: KeyVaultEmulator, filler: int) -> None:
    emu.seed({"db-password": "pw-1", "api-key": "key-1", "region": "north", "port": "9000"})
    emu.seed({f"other-{i:04d}": f"x{i}" for i in range(filler)})


async def test_unchanged_vault_in_list_mode_costs_list_pages_and_no_get(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """4 tracked secrets, 30 in the vault (2 pages): an unchanged refresh is 2 list requests."""
    emu = keyvault_emulator
    seed_app(emu, 26)
    await next_second()
    async with make_vault() as vault, vault.watch(AppSettings, interval=60, clock_skew=0) as live:
        emu.clear_requests()
        assert await live.refresh() is None
        assert list_requests(emu) == 2
        assert total_gets(emu) == 0
        assert live.health.mode == "list"
        emu.clear_requests()
        assert await live.refresh() is None
        assert (list_requests(emu), total_gets(emu)) == (2, 0)
        assert live.generation == 0


async def test_one_rotated_secret_costs_list_pages_plus_one_get(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """Rotating one of the tracked secrets: the list pages plus exactly one GET, one event."""
    emu = keyvault_emulator
    seed_app(emu, 26)
    await next_second()
    async with make_vault() as vault, vault.watch(AppSettings, interval=60, clock_skew=0) as live:
        old = live.current
        await next_second()
        version = emu.set_secret("db-password", "pw-2")
        emu.clear_requests()
        change = await live.refresh()
        assert change is not None
        assert list_requests(emu) == 2
        assert secret_gets(emu) == {"db-password": 1}
        assert change.generation == live.generation == 1
        assert change.fields == ("db_password",)
        [secret] = change.secrets
        assert secret.name == "db-password"
        assert secret.new_version == version
        assert secret.old_version != version
        assert secret.new_updated is not None and secret.old_updated is not None
        assert secret.new_updated > secret.old_updated
        assert live.current.db_password.get_secret_value() == "pw-2"
        assert old.db_password.get_secret_value() == "pw-1"  # the old instance is untouched
        assert "pw-" not in repr(change)


async def test_few_tracked_secrets_use_gets_after_learning_the_vault_size(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """2 tracked secrets in a 3-page vault: one list pass learns N, then 2 GETs per refresh."""

    class Small(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="KVCONFIG_REFRESH_TEST_")
        db_password: SecretStr
        api_key: str

    emu = keyvault_emulator
    seed_app(emu, 60)
    async with make_vault() as vault, vault.watch(Small, interval=60) as live:
        emu.clear_requests()
        await live.refresh()
        assert list_requests(emu) == 3  # 64 secrets: first pass lists (size unknown)
        assert live.health.mode == "get"
        emu.clear_requests()
        assert await live.refresh() is None
        assert list_requests(emu) == 0
        assert secret_gets(emu) == {"db-password": 1, "api-key": 1}


async def test_a_single_tracked_secret_never_lists(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """One tracked secret costs one GET per refresh: a list page could not be cheaper."""

    class One(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="KVCONFIG_REFRESH_TEST_")
        api_key: str

    emu = keyvault_emulator
    seed_app(emu, 0)
    async with make_vault() as vault, vault.watch(One, interval=60) as live:
        emu.clear_requests()
        emu.set_secret("api-key", "key-2")
        change = await live.refresh()
        assert change is not None and change.fields == ("api_key",)
        assert (list_requests(emu), secret_gets(emu)) == (0, {"api-key": 1})


async def test_watch_after_a_cached_load_trusts_the_list_at_once(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """The usual startup: load() warms the cache, watch() starts from it. The cached answers
    count from when they were requested, so an unchanged refresh is list pages only."""
    emu = keyvault_emulator
    week_ago = datetime.now(UTC) - timedelta(days=7)
    emu.seed({"db-password": "pw-1", "api-key": "key-1", "region": "north", "port": "9000"},
             created=week_ago)  # fmt: skip
    emu.seed({f"other-{i:04d}": f"x{i}" for i in range(26)}, created=week_ago)
    async with make_vault(ttl=300) as vault:
        await vault.load(AppSettings)
        emu.clear_requests()
        async with vault.watch(AppSettings, interval=60) as live:
            assert total_gets(emu) == 0  # entered from the cache
            assert await live.refresh() is None
            assert (list_requests(emu), total_gets(emu)) == (2, 0)
