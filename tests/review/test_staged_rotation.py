"""Issue 9 item 8: during a staged rotation, load() and watch() serve the same version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic_settings import BaseSettings

from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory


class Api(BaseSettings):
    api_key: str


async def test_load_skips_a_version_not_valid_yet_like_watch(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    emu = keyvault_emulator
    emu.set_secret("api-key", "today")
    async with make_vault(ttl=0) as vault, vault.watch(Api, interval=60) as live:
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        emu.set_secret("api-key", "tomorrow", not_before=tomorrow)
        await live.refresh()
        assert live.current.api_key == "today"  # the running watcher ignores it
        emu.clear_requests()
        restarted = await vault.load(Api)  # a replica starting now
        assert restarted.api_key == "today"
        paths = [r.path for r in emu.requests if r.status == 200]
        assert paths.count("/secrets/api-key/versions") == 1  # the one extra list
        accepted = await make_vault(ttl=0).load(Api)
        assert accepted.api_key == "today"


async def test_no_extra_request_without_a_pending_version(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.set_secret("api-key", "today")
    async with make_vault(ttl=0) as vault:
        await vault.load(Api)
    assert not any(r.path.endswith("/versions") for r in keyvault_emulator.requests)
