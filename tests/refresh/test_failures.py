"""Failures never reach ``live.current``: outage, 429 storms, invalid values, forbidden list."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kvconfig import SettingsValidationError, VaultError, VaultUnavailableError
from kvconfig._refresh._listing import RefreshUnavailableError
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory
from tests.refresh.helpers import SEED, AppSettings, list_requests, next_second, secret_gets


async def test_outage_keeps_last_known_good_and_recovers(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """During an outage refresh fails, current and the task survive; afterwards it catches up."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with (
        make_vault() as vault,
        vault.watch(AppSettings, interval=0.05, max_staleness=0.05) as live,
    ):
        good = live.current
        emu.faults.outage(True)
        with pytest.raises(VaultUnavailableError):
            await live.refresh()
        await asyncio.sleep(0.3)  # the background task keeps failing meanwhile
        health = live.health
        assert live.current is good
        assert not health.healthy
        assert health.consecutive_failures >= 1
        assert health.last_error is not None and "ServiceUnavailable" in health.last_error
        assert live._task is not None and not live._task.done()

        emu.faults.outage(False)
        emu.set_secret("api-key", "key-2")
        await live.refresh()
        assert live.current.api_key == "key-2"
        health = live.health
        assert health.healthy
        assert health.consecutive_failures == 0
        assert health.failures >= 2


@pytest.mark.parametrize("retry_after", [None, 0.02])
async def test_throttling_storm_is_absorbed(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, retry_after: float | None
) -> None:
    """A burst of 429s (with or without Retry-After) shorter than the interval is retried
    inside the refresh; the rotation behind it is still picked up."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=1.0) as live:
        emu.set_secret("db-password", "pw-2")
        emu.clear_requests()
        emu.faults.fail_next(5, status=429, retry_after=retry_after)
        change = await live.refresh()
        assert change is not None
        assert live.current.db_password.get_secret_value() == "pw-2"
        assert sum(1 for r in emu.requests if r.status == 429) == 5
        assert live.health.consecutive_failures == 0


async def test_long_429_storm_keeps_serving_and_honours_retry_after(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """A storm outlasting the refresh: the refresh fails, current stays, the next attempt waits
    at least the server's Retry-After; once the storm ends the refresh succeeds."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=0.2) as live:
        good = live.current
        emu.faults.fail_next(1000, status=429, retry_after=5)
        with pytest.raises(VaultUnavailableError) as caught:
            await live.refresh()
        assert live.current is good
        assert live._failure_delay(caught.value) >= 5.0
        assert "429 Throttled" in (live.health.last_error or "")

        # Without Retry-After: backoff with jitter, capped by the interval.
        emu.faults.clear()
        emu.faults.fail_next(1000, status=429)
        with pytest.raises(VaultUnavailableError) as caught:
            await live.refresh()
        assert 0.0 <= live._failure_delay(caught.value) <= 0.2

        emu.faults.clear()
        emu.set_secret("port", "9001")
        await live.refresh()
        assert live.current.port == 9001
        assert live.health.consecutive_failures == 0


async def test_list_retry_after_is_reported(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """A throttled list pass that outlasts the refresh carries the server's Retry-After."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=0.1) as live:
        assert live.health.mode == "list"
        emu.faults.fail_next(1000, status=429, retry_after=3)
        with pytest.raises(RefreshUnavailableError) as caught:
            await live.refresh()
        assert caught.value.retry_after == 3
        emu.faults.clear()


async def test_invalid_new_value_is_rejected_and_old_kept(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rotation to a value that does not validate is not published; health names the field,
    never the value; fixing the value publishes it."""
    emu = keyvault_emulator
    emu.seed(SEED)
    caplog.set_level(logging.DEBUG, logger="kvconfig")
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        emu.set_secret("port", "not-a-port-zz9")
        with pytest.raises(SettingsValidationError):
            await live.refresh()
        assert live.current.port == 9000
        assert live.generation == 0
        health = live.health
        assert health.last_error is not None and "port" in health.last_error
        assert "not-a-port-zz9" not in health.last_error
        # The vault was read: a rejected value leaves the settings fresh but degraded.
        assert health.consecutive_failures == 0
        assert health.serving and health.fresh and health.degraded
        [issue] = health.issues
        assert (issue.kind, issue.secret, issue.fields) == ("rejected", "port", ("port",))
        assert issue.vault == emu.vault_url and "not-a-port-zz9" not in repr(health)
        # Tried again at the next refresh (the value is read again), still rejected.
        with pytest.raises(SettingsValidationError):
            await live.refresh()

        emu.set_secret("port", "9443")
        change = await live.refresh()
        assert change is not None and change.fields == ("port",)
        assert live.current.port == 9443
        assert not live.health.degraded
    assert "not-a-port-zz9" not in caplog.text
    assert caplog.text.count("rejected a new value") == 1  # once per bad version


async def test_forbidden_list_falls_back_to_gets_for_good(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 403 on the list: that refresh continues with GETs, and no list is sent again."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        assert live.health.mode == "list"
        emu.set_secret("api-key", "key-2")
        emu.clear_requests()
        emu.faults.fail_next(1, status=403)
        change = await live.refresh()
        assert change is not None and live.current.api_key == "key-2"
        assert [r.status for r in emu.requests if r.path == "/secrets"] == [403]
        assert secret_gets(emu) == {"db-password": 1, "api-key": 1, "port": 1}
        assert live.health.mode == "get"
        emu.clear_requests()
        await live.refresh()
        await live.refresh()
        assert list_requests(emu) == 0
        assert sum(secret_gets(emu).values()) == 6
    assert caplog.text.count("forbidden") == 1


async def test_refresh_keeps_going_after_vault_values_change_back_and_forth(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """Rotations across seconds are each published once, generation by generation."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60, clock_skew=0) as live:
        for n in range(2, 5):
            await next_second()
            emu.set_secret("api-key", f"key-{n}")
            change = await live.refresh()
            assert change is not None and change.generation == n - 1
            assert live.current.api_key == f"key-{n}"


async def test_list_pass_resumes_at_the_failed_page(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """A transient failure on page 2 retries page 2 only (nextLink kept), not the whole list."""
    emu = keyvault_emulator
    emu.seed(SEED)
    emu.seed({f"other-{i:04d}": "x" for i in range(30)})  # 33 secrets: 2 pages
    async with make_vault() as vault, vault.watch(AppSettings, interval=1.0) as live:
        await live.refresh()  # learns the size
        emu.clear_requests()
        # Fail the second page: wrap the emulator's fault hook so that its second call (the
        # second page; a pass sends its pages one after another) gets a 503.
        original = emu.faults.before_auth
        calls = 0

        def second_fails() -> object:
            nonlocal calls
            calls += 1
            if calls == 2:
                emu.faults.fail_next(1, status=503)
            return original()

        emu.faults.before_auth = second_fails  # type: ignore[method-assign]
        try:
            await live.refresh()
        finally:
            emu.faults.before_auth = original  # type: ignore[method-assign]
        pages = [r for r in emu.requests if r.path == "/secrets"]
        assert [r.status for r in pages] == [200, 503, 200]
        assert "$skiptoken" in pages[1].query and pages[1].query == pages[2].query


async def test_list_refused_other_than_403_fails_the_refresh(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """A 400 on the list is a refresh failure (kept serving, recorded), not a switch to GETs."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        emu.faults.fail_next(1, status=400)
        with pytest.raises(VaultError, match="listing the secrets"):
            await live.refresh()
        assert live.health.mode == "list"
        assert live.current.port == 9000
        assert await live.refresh() is None


@pytest.mark.parametrize("fault", ["reset", "timeout"])
async def test_network_failures_keep_serving_and_recover(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, fault: str
) -> None:
    """Dropped connections and read timeouts fail the refresh (transiently), not the settings."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with (
        make_vault(request_timeout=0.2) as vault,
        vault.watch(AppSettings, interval=0.1) as live,
    ):
        good = live.current
        if fault == "reset":
            emu.faults.fail_next(1000, status="reset")
        else:
            emu.faults.latency(1000)
        with pytest.raises(VaultUnavailableError):
            await live.refresh()
        assert live.current is good
        assert live.health.consecutive_failures >= 1
        emu.faults.clear()
        emu.set_secret("api-key", "key-2")
        for _ in range(3):  # a request still in the slow path may fail one more attempt
            try:
                await live.refresh()
                break
            except VaultUnavailableError:
                continue
        assert live.current.api_key == "key-2"


async def test_tls_failure_keeps_last_known_good_and_recovers(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """A certificate the client cannot verify (a broken TLS-inspecting proxy, a bad rotation):
    refreshes fail, live.current stays, health says why; once trust is back it catches up."""
    emu = keyvault_emulator
    emu.seed(SEED)
    async with make_vault() as vault, vault.watch(AppSettings, interval=60) as live:
        before = live.current
        emu.faults.untrusted_certificate()
        emu.faults.fail_next(1, status="reset")  # drop the pooled connection
        emu.set_secret("api-key", "key-2")
        for _ in range(2):
            with pytest.raises(VaultError):
                await live.refresh()
        assert live.current is before
        assert live.health.consecutive_failures == 2
        assert "certificate" in (live.health.last_error or "").lower()
        emu.faults.untrusted_certificate(False)
        change = await live.refresh()
        assert change is not None and change.fields == ("api_key",)
        assert live.current.api_key == "key-2"
        assert live.health.consecutive_failures == 0
