"""Health operators can act on (serving / fresh / degraded), partial publish of good rotations,
and ``on_refresh_error``: all through real faults on the emulator."""

from __future__ import annotations

import asyncio
import logging

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import (
    KvConfigError,
    SettingsValidationError,
    VaultUnavailableError,
)
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory
from tests.refresh.helpers import SEED, AppSettings, until

CANARY = "canary-zz9-value"


async def test_outage_longer_than_max_staleness_keeps_serving_but_not_fresh(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """A vault outage: still serving (readiness stays green), no longer fresh (alert), not
    degraded (nothing wrong with the configuration); fresh again after recovery."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=0.05, max_staleness=0.1) as live,
    ):
        health = live.health
        assert (health.serving, health.fresh, health.degraded, health.healthy) == (
            True,
            True,
            False,
            True,
        )
        emu.faults.outage(True)
        await until(lambda: live.health.staleness > 0.1 and live.health.failures >= 2)
        health = live.health
        assert health.serving and not health.fresh and not health.healthy
        assert not health.degraded and health.issues == ()
        assert health.consecutive_failures >= 1

        emu.faults.outage(False)
        await live.refresh()
        health = live.health
        assert health.serving and health.fresh and health.healthy
    health = live.health
    assert not health.serving and not health.fresh and not health.healthy


@pytest.mark.parametrize("how", ["deleted", "disabled"])
async def test_kept_value_of_a_deleted_or_disabled_secret_is_degraded(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, how: str
) -> None:
    """on_missing='keep': serving and fresh, degraded naming the secret, its field, the vault
    and the version kept; restoring the secret clears it."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        version = live._detector.held[("api-key", None)].version  # type: ignore[union-attr]
        if how == "deleted":
            emu.delete_secret("api-key")
        else:
            emu.update_secret("api-key", enabled=False)
        assert await live.refresh() is None
        health = live.health
        assert health.serving and health.fresh and health.degraded
        [issue] = health.issues
        assert (issue.kind, issue.secret, issue.fields, issue.vault, issue.version) == (
            how,
            "api-key",
            ("api_key",),
            emu.vault_url,
            version,
        )
        if how == "disabled":
            emu.update_secret("api-key", enabled=True)
            await live.refresh()
            assert not live.health.degraded


async def test_forbidden_list_is_degraded(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """A 403 on the list: the refresh still works (GETs), health says why it costs more."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        emu.faults.fail_next(1, status=403)
        await live.refresh()
        health = live.health
        assert health.fresh and health.degraded
        assert [i.kind for i in health.issues] == ["list_forbidden"]


async def test_one_invalid_rotation_does_not_block_another(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two secrets rotate at once, one to a value that does not validate: the good one is
    published, the bad one keeps its last-known-good (degraded, named, never shown), is retried
    at each refresh, logged once, and published once fixed."""
    emu = keyvault_emulator
    emu.seed(SEED)
    caplog.set_level(logging.DEBUG, logger="kvconfig")
    changes = []
    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=60, on_change=changes.append) as live,
    ):
        emu.set_secret("api-key", "key-2")
        emu.set_secret("port", CANARY)
        change = await live.refresh()
        assert change is not None and change.fields == ("api_key",)
        assert [s.name for s in change.secrets] == ["api-key"]
        assert live.current.api_key == "key-2" and live.current.port == 9000
        health = live.health
        assert health.serving and health.fresh and health.degraded
        [issue] = health.issues
        assert (issue.kind, issue.secret, issue.fields, issue.vault) == (
            "rejected",
            "port",
            ("port",),
            emu.vault_url,
        )
        assert "port" in issue.detail and CANARY not in repr(health)

        # Only the bad one differs now: nothing to publish, so refresh() says why.
        with pytest.raises(SettingsValidationError, match="port"):
            await live.refresh()
        assert live.health.degraded and live.generation == 1

        emu.set_secret("port", "9443")
        change = await live.refresh()
        assert change is not None and change.fields == ("port",)
        assert live.current.port == 9443 and not live.health.degraded
        await until(lambda: len(changes) == 2)
    assert CANARY not in caplog.text
    assert caplog.text.count("rejected a new value") == 1


async def test_on_refresh_error_gets_value_free_errors(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """Each failed refresh and each rejected value reaches on_refresh_error (awaited, after the
    refresh) as a KvConfigError without its chain and without a value."""
    emu = keyvault_emulator
    emu.seed(SEED)
    errors: list[KvConfigError] = []

    async def on_error(error: KvConfigError) -> None:
        await asyncio.sleep(0)
        errors.append(error)

    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=60, on_refresh_error=on_error) as live,
    ):
        emu.faults.outage(True)
        with pytest.raises(VaultUnavailableError):
            await live.refresh()
        emu.faults.outage(False)
        emu.set_secret("port", CANARY)
        with pytest.raises(SettingsValidationError):
            await live.refresh()
        await until(lambda: len(errors) == 2)
        unavailable, invalid = errors
        assert isinstance(unavailable, VaultUnavailableError)
        assert unavailable.vault_url == emu.vault_url and "503" in str(unavailable)
        assert isinstance(invalid, SettingsValidationError) and "port" in str(invalid)
        for error in errors:
            assert error.__context__ is None and error.__cause__ is None
            assert CANARY not in f"{error} {error!r} {getattr(error, 'errors', '')}"


async def test_a_hung_on_refresh_error_does_not_stop_refreshing(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hook that never returns is cancelled after on_change_timeout; refreshes go on while it
    hangs, the next error is delivered, and a later rotation is still published."""
    emu = keyvault_emulator
    emu.seed(SEED)
    failures_seen: list[tuple[int, int]] = []  # (failures when called, when cancelled)
    holder: list[object] = []

    async def hang(error: KvConfigError) -> None:
        live = holder[0]
        before = live.health.failures  # type: ignore[attr-defined]
        try:
            await asyncio.Event().wait()
        finally:
            failures_seen.append((before, live.health.failures))  # type: ignore[attr-defined]

    async with (
        make_vault() as vault,
        vault.watch(
            AppSettings, interval=0.05, on_refresh_error=hang, on_change_timeout=0.3
        ) as live,
    ):
        holder.append(live)
        emu.faults.outage(True)
        await until(lambda: len(failures_seen) >= 2)
        before, after = failures_seen[0]
        assert after > before  # refreshing went on while the hook hung
        emu.faults.outage(False)
        emu.set_secret("api-key", "key-2")
        await until(lambda: live.current.api_key == "key-2")
    assert "on_refresh_error callback for AppSettings" in caplog.text
    assert "abandoned" in caplog.text


async def test_an_unparsable_json_rotation_does_not_block_another(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """A parse error carries no location: each change is then validated alone to find the bad
    one, and the good one is still published."""

    class WithJson(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="KVCONFIG_REFRESH_TEST_")
        api_key: str
        tokens: dict[str, str] = {}

    emu = keyvault_emulator
    emu.seed({"api-key": "key-1", "tokens": '{"a": "b"}'})
    async with make_vault() as vault, vault.watch(WithJson, interval=60) as live:
        emu.set_secret("api-key", "key-2")
        emu.set_secret("tokens", '{"a": "' + CANARY)  # truncated JSON
        change = await live.refresh()
        assert change is not None and change.fields == ("api_key",)
        assert live.current.tokens == {"a": "b"}
        [issue] = live.health.issues
        assert (issue.kind, issue.secret) == ("rejected", "tokens")
        assert CANARY not in repr(live.health)
