"""Issue 9 regressions in the fetch path: malformed answers, deadlines, Retry-After, joins,
negative caching. Real SDK against the emulator; round trips counted from ``emu.requests``."""

from __future__ import annotations

import asyncio
import traceback

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from kvconfig import (
    ConfigurationError,
    MalformedResponseError,
    MissingSettingError,
    Secret,
    VaultUnavailableError,
)
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory
from tests.core.conftest import secret_gets

VALUE = "CANARY-malformed-0123456789abcdef"


class AlphaOnly(BaseSettings):
    alpha: SecretStr


class Three(BaseSettings):
    alpha: SecretStr
    beta: SecretStr
    gamma: SecretStr


def seed(emu: KeyVaultEmulator) -> None:
    emu.seed({"alpha": VALUE, "beta": "b", "gamma": "c"})


# -- item 2: a 2xx whose body is not JSON -------------------------------------------------------


@pytest.mark.parametrize("how", ["truncate", "html"])
async def test_malformed_200_is_retried(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, how: str
) -> None:
    seed(keyvault_emulator)
    vault = make_vault()
    await vault.load(Three)  # warm: the next request is a plain GET
    keyvault_emulator.clear_requests()
    keyvault_emulator.faults.garble_next(1, how)  # type: ignore[arg-type]
    settings = await make_vault(ttl=0).load(AlphaOnly)
    assert settings.alpha.get_secret_value() == VALUE
    assert [r.status for r in keyvault_emulator.requests if r.status != 401] == [200, 200]


async def test_malformed_200_until_the_deadline_is_a_distinct_error_without_the_body(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed(keyvault_emulator)
    vault = make_vault(startup_timeout=0.5)
    keyvault_emulator.faults.garble_next(10_000, "truncate")
    with pytest.raises(MalformedResponseError) as info:
        await vault.load(AlphaOnly)
    error = info.value
    assert isinstance(error, VaultUnavailableError)
    assert error.status == 200  # what the vault (or the proxy) answered; the body is not kept
    assert error.__cause__ is None and error.__context__ is None
    shown = "".join(traceback.format_exception(error)) + repr(error)
    assert VALUE[:20] not in shown and "CANARY" not in shown
    assert secret_gets(keyvault_emulator)["alpha"] >= 2  # retried within the deadline


# -- item 9: startup_timeout bounds the whole load ----------------------------------------------


async def test_startup_timeout_bounds_slow_requests(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed(keyvault_emulator)
    keyvault_emulator.faults.latency(1500)
    vault = make_vault(startup_timeout=0.3, request_timeout=10)
    # Without the bound, priming alone is a 401 plus a read: 3 s. "Did not hang" bound only.
    with pytest.raises(VaultUnavailableError):
        await asyncio.wait_for(vault.load(AlphaOnly), 1.4)


# -- item 10: Retry-After never removes the backoff ---------------------------------------------


@pytest.mark.parametrize("retry_after", [0, -5])
async def test_retry_after_zero_keeps_the_backoff(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, retry_after: float
) -> None:
    seed(keyvault_emulator)
    vault = make_vault(retry_backoff=0.2, retry_backoff_max=0.2, startup_timeout=0.6)
    await vault.load(Three)
    keyvault_emulator.clear_requests()
    keyvault_emulator.faults.fail_next(40, status=429, retry_after=retry_after)
    with pytest.raises(VaultUnavailableError):
        await make_vault(retry_backoff=0.2, retry_backoff_max=0.2, startup_timeout=0.6, ttl=0).load(
            AlphaOnly
        )
    throttled = [r for r in keyvault_emulator.requests if r.status == 429]
    # Jitter below 0.2 s over 0.6 s: a handful of attempts, not a storm of 40.
    assert 1 <= len(throttled) < 25


async def test_retry_after_travels_on_the_error(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.faults.fail_next(1, status=429, retry_after=60)
    with pytest.raises(VaultUnavailableError) as info:
        await make_vault(startup_timeout=1).load(AlphaOnly)
    assert info.value.retry_after == 60


# -- item 4: every caller keeps its own deadline ------------------------------------------------


async def test_long_caller_joining_a_short_request_keeps_its_deadline(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed(keyvault_emulator)
    vault = make_vault(ttl=0, startup_timeout=5)
    await vault.load(Three)
    keyvault_emulator.faults.outage(True)
    fetcher = vault._open()
    short = asyncio.create_task(fetcher.fetch(vault.plan(AlphaOnly).refs, timeout=0.2))
    await asyncio.sleep(0.01)
    long = asyncio.create_task(vault.load(AlphaOnly))
    with pytest.raises(VaultUnavailableError):
        await short
    assert not long.done()
    keyvault_emulator.faults.outage(False)
    settings = await asyncio.wait_for(long, 5)
    assert settings.alpha.get_secret_value() == VALUE


async def test_short_caller_joining_a_long_request_gives_up_on_time(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed(keyvault_emulator)
    vault = make_vault(ttl=0, startup_timeout=30)
    await vault.load(Three)
    keyvault_emulator.faults.outage(True)
    fetcher = vault._open()
    long = asyncio.create_task(vault.load(AlphaOnly))
    await asyncio.sleep(0.01)
    with pytest.raises(VaultUnavailableError):
        await asyncio.wait_for(fetcher.fetch(vault.plan(AlphaOnly).refs, timeout=0.2), 3)
    assert not long.done()  # the shared request goes on for the caller that still wants it
    keyvault_emulator.faults.outage(False)
    await asyncio.wait_for(long, 10)


# -- item 5: never join a cancelled request -----------------------------------------------------


async def test_load_after_a_cancelled_load_is_not_told_closed(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed(keyvault_emulator)
    vault = make_vault(ttl=0)
    await vault.load(AlphaOnly)
    keyvault_emulator.faults.latency(200)
    doomed = asyncio.create_task(vault.load(Three))
    await asyncio.sleep(0.05)
    doomed.cancel()
    await asyncio.sleep(0)  # its cleanup cancels its requests
    settings = await vault.load(Three)
    assert settings.gamma.get_secret_value() == "c"
    with pytest.raises(asyncio.CancelledError):
        await doomed


# -- item 11: negative answers are not served back ---------------------------------------------


async def test_missing_secret_created_after_a_failed_load_is_found(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    class Needs(BaseSettings):
        late_secret: str

    vault = make_vault(ttl=300)
    with pytest.raises(MissingSettingError):
        await vault.load(Needs)
    keyvault_emulator.seed({"late-secret": "here"})
    assert (await vault.load(Needs)).late_secret == "here"


# -- item 15: smaller ones ----------------------------------------------------------------------


def test_secret_version_with_trailing_newline_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        Secret(version="0123456789abcdef0123456789abcdef\n")


async def test_emulator_accepts_a_latency_range() -> None:
    emu = KeyVaultEmulator(latency_ms=(1, 3))
    await emu.start()
    try:
        emu.seed({"alpha": "a"})
        async with emu.secret_client() as client:
            assert (await client.get_secret("alpha")).value == "a"
    finally:
        await emu.aclose()
    with pytest.raises(ValueError):
        KeyVaultEmulator(latency_ms=(5, 1))
