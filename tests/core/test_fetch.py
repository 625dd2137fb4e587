"""Requests, retries, priming, TTL cache, single-flight and closing, counted in the request log."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from kvconfig import (
    ClosedError,
    KeyVault,
    VaultAuthenticationError,
    VaultError,
    VaultPermissionError,
    VaultUnavailableError,
)
from kvconfig.emulator import CertificateAuthority, KeyVaultEmulator
from tests.conftest import VaultFactory

from .conftest import gets, secret_gets


class Three(BaseSettings):
    alpha: SecretStr
    beta: SecretStr
    gamma: SecretStr


class AlphaOnly(BaseSettings):
    alpha: SecretStr


class AlphaBeta(BaseSettings):
    alpha: SecretStr
    beta: SecretStr


def seed_three(emu: KeyVaultEmulator) -> None:
    emu.seed({"alpha": "a", "beta": "b", "gamma": "c"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def install_clock(vault: KeyVault) -> FakeClock:
    clock = FakeClock()
    vault._open().cache._clock = clock
    return clock


class TrackingCredential:
    """Wraps the emulator's credential to observe close() (the credential is real)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.closed = 0
        self.tokens = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.tokens += 1
        return await self._inner.get_token(*scopes, **kwargs)

    async def close(self) -> None:
        self.closed += 1
        await self._inner.close()

    async def __aenter__(self) -> TrackingCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- request shape -----------------------------------------------------------------------


async def test_one_priming_request_then_the_rest(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    keyvault_emulator.faults.latency(5)
    credential = TrackingCredential(keyvault_emulator.credential())
    await make_vault(credential=credential).load(Three)
    assert credential.tokens == 1
    requests = keyvault_emulator.requests
    assert [r.status for r in requests[:2]] == [401, 200]  # challenge, then the primed GET
    assert requests[0].path == requests[1].path
    assert len(gets(keyvault_emulator, status=401)) == 1
    assert secret_gets(keyvault_emulator) == {"alpha": 1, "beta": 1, "gamma": 1}
    # The rest went out only once the priming request had been authorised.
    primed = requests[1].time
    assert all(r.time >= primed for r in requests[2:])


async def test_concurrent_cold_loads_fetch_one_token(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    keyvault_emulator.faults.latency(10)
    credential = TrackingCredential(keyvault_emulator.credential())
    vault = make_vault(credential=credential, ttl=0)
    await asyncio.gather(vault.load(Three), vault.load(AlphaBeta), vault.load(Three))
    assert credential.tokens == 1
    assert len(gets(keyvault_emulator, status=401)) == 1


async def test_only_gets_of_needed_secrets_never_a_list(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    keyvault_emulator.seed({f"unrelated-{i}": "x" for i in range(30)})
    await make_vault().load(AlphaOnly)
    assert {r.method for r in keyvault_emulator.requests} == {"GET"}
    assert all(r.path.rstrip("/") != "/secrets" for r in keyvault_emulator.requests)
    assert secret_gets(keyvault_emulator) == {"alpha": 1}


async def test_warm_client_does_not_prime_again(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    vault = make_vault(ttl=0)
    await vault.load(AlphaOnly)
    keyvault_emulator.clear_requests()
    await vault.load(Three)
    assert len(gets(keyvault_emulator, status=401)) == 0
    assert secret_gets(keyvault_emulator) == {"alpha": 1, "beta": 1, "gamma": 1}


# -- permanent errors --------------------------------------------------------------------


async def test_forbidden_is_raised_at_once_not_retried(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    keyvault_emulator.faults.fail_next(1, status=403)
    with pytest.raises(VaultPermissionError) as info:
        await make_vault().load(Three)
    assert len(keyvault_emulator.requests) == 1
    assert info.value.status == 403
    assert info.value.vault_url == keyvault_emulator.vault_url
    assert info.value.secret_name == "alpha"
    assert keyvault_emulator.vault_url in str(info.value) and "'alpha'" in str(info.value)


async def test_forbidden_after_priming_cancels_the_rest(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    vault = make_vault(ttl=0)
    await vault.load(AlphaOnly)
    keyvault_emulator.clear_requests()
    keyvault_emulator.faults.fail_next(1, status=403)
    with pytest.raises(VaultPermissionError):
        await vault.load(Three)
    assert len(keyvault_emulator.requests) <= 3
    assert all(r.status in (200, 403) for r in keyvault_emulator.requests)
    assert len([r for r in keyvault_emulator.requests if r.status == 403]) == 1


async def test_refused_credential_is_an_authentication_error(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    vault = make_vault(ttl=0)
    await vault.load(AlphaOnly)
    keyvault_emulator.clear_requests()
    # A 401 to a request that carried a token: the SDK re-authenticates once, then gives up.
    keyvault_emulator.faults.fail_next(2, status=401)
    with pytest.raises(VaultAuthenticationError) as info:
        await vault.load(AlphaOnly)
    assert info.value.status == 401
    assert len(keyvault_emulator.requests) == 2


async def test_bad_request_is_not_retried(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.faults.fail_next(1, status=400)
    with pytest.raises(VaultError) as info:
        await make_vault().load(AlphaOnly)
    assert info.value.status == 400
    assert len(keyvault_emulator.requests) == 1


async def test_untrusted_certificate_fails_fast(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, tmp_path: Path
) -> None:
    other = CertificateAuthority.generate("some other CA")
    other.save(tmp_path / "other.pem", tmp_path / "other-key.pem")
    vault = make_vault(ca_file=tmp_path / "other.pem")
    with pytest.raises(VaultError, match="not trusted"):
        await vault.load(AlphaOnly)
    assert keyvault_emulator.requests == []  # the handshake failed: no HTTP request, no retry


# -- transient errors ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 500, 429, "reset"])
async def test_transient_failures_are_retried(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, status: Any
) -> None:
    seed_three(keyvault_emulator)
    keyvault_emulator.faults.fail_next(2, status=status)
    settings = await make_vault().load(Three)
    assert settings.gamma.get_secret_value() == "c"
    statuses = [r.status for r in keyvault_emulator.requests]
    assert statuses.count(200) == 3  # each secret read once successfully
    assert len(statuses) == 2 + 1 + 3  # two failures, one challenge, three reads


async def test_retry_after_is_honoured(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    keyvault_emulator.faults.fail_next(1, status=429, retry_after=0.2)
    await make_vault(retry_backoff=0, retry_backoff_max=0).load(AlphaOnly)
    throttled, retried = keyvault_emulator.requests[0], keyvault_emulator.requests[1]
    assert throttled.status == 429
    assert retried.time - throttled.time >= 0.19


async def test_retry_after_beyond_the_deadline_gives_up(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.faults.fail_next(1, status=429, retry_after=60)
    with pytest.raises(VaultUnavailableError, match="429"):
        await make_vault(startup_timeout=1).load(AlphaOnly)
    assert len(keyvault_emulator.requests) == 1


async def test_outage_beyond_startup_timeout_names_vault_and_secret(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    keyvault_emulator.faults.outage(True)
    with pytest.raises(VaultUnavailableError) as info:
        await make_vault(startup_timeout=0.3).load(Three)
    message = str(info.value)
    assert keyvault_emulator.vault_url in message
    assert "'alpha'" in message and "503" in message
    # The priming request failed, so nothing was fanned out into the outage.
    assert secret_gets(keyvault_emulator).keys() == {"alpha"}
    assert len(keyvault_emulator.requests) >= 2  # it did retry


async def test_outage_after_priming_names_every_secret(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    vault = make_vault(ttl=0, startup_timeout=0.3)
    await vault.load(AlphaOnly)
    keyvault_emulator.faults.outage(True)
    with pytest.raises(VaultUnavailableError) as info:
        await vault.load(Three)
    assert all(f"'{n}'" in str(info.value) for n in ("alpha", "beta", "gamma"))


# -- cache and single-flight -------------------------------------------------------------


async def test_second_load_within_ttl_makes_no_request(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    vault = make_vault(ttl=300)
    await vault.load(Three)
    keyvault_emulator.clear_requests()
    keyvault_emulator.seed({"alpha": "rotated"})
    settings = await vault.load(Three)
    assert keyvault_emulator.requests == []
    assert settings.alpha.get_secret_value() == "a"


async def test_after_expiry_only_stale_secrets_are_fetched(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    vault = make_vault(ttl=300)
    clock = install_clock(vault)
    await vault.load(AlphaOnly)  # alpha cached at t=0
    clock.now += 200
    await vault.load(AlphaBeta)  # alpha fresh, beta cached at t=200
    assert secret_gets(keyvault_emulator) == {"alpha": 1, "beta": 1}
    clock.now += 150  # alpha is 350 s old (stale), beta 150 s (fresh)
    keyvault_emulator.clear_requests()
    keyvault_emulator.seed({"alpha": "rotated"})
    settings = await vault.load(AlphaBeta)
    assert secret_gets(keyvault_emulator) == {"alpha": 1}
    assert settings.alpha.get_secret_value() == "rotated"


async def test_missing_secrets_are_cached_too(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    class S(BaseSettings):
        maybe: str | None = None

    vault = make_vault()
    await vault.load(S)
    keyvault_emulator.clear_requests()
    await vault.load(S)
    assert keyvault_emulator.requests == []


async def test_ttl_zero_disables_the_cache(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    vault = make_vault(ttl=0)
    await vault.load(Three)
    keyvault_emulator.clear_requests()
    await vault.load(Three)
    assert secret_gets(keyvault_emulator) == {"alpha": 1, "beta": 1, "gamma": 1}


async def test_max_age_zero_bypasses_the_cache(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    vault = make_vault(ttl=300)
    await vault.load(Three)
    keyvault_emulator.clear_requests()
    result = await vault._open().fetch(vault.plan(Three).refs, max_age=0)
    assert result.requests == 3 and result.cache_hits == 0
    assert secret_gets(keyvault_emulator) == {"alpha": 1, "beta": 1, "gamma": 1}


@pytest.mark.parametrize("ttl", [300, 0])
async def test_concurrent_loads_share_requests(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, ttl: float
) -> None:
    seed_three(keyvault_emulator)
    keyvault_emulator.faults.latency(20)
    vault = make_vault(ttl=ttl)
    first, second = await asyncio.gather(vault.load(Three), vault.load(AlphaBeta))
    assert first.alpha.get_secret_value() == second.alpha.get_secret_value() == "a"
    assert secret_gets(keyvault_emulator) == {"alpha": 1, "beta": 1, "gamma": 1}
    assert len(gets(keyvault_emulator, status=401)) == 1


async def test_cancelled_load_leaves_nothing_running(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    vault = make_vault()
    await vault.load(AlphaOnly)
    keyvault_emulator.faults.latency(200)
    task = asyncio.create_task(vault.load(Three))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert vault._open()._flights == {}


# -- lifecycle ---------------------------------------------------------------------------


async def test_aclose_is_idempotent_and_use_after_close_raises(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    seed_three(keyvault_emulator)
    credential = TrackingCredential(keyvault_emulator.credential())
    async with KeyVault(
        keyvault_emulator.vault_url, credential, ca_file=keyvault_emulator.ca_file
    ) as vault:
        await vault.load(AlphaOnly)
        session = vault._session
        assert session is not None and not session.closed
    assert vault.closed and credential.closed == 1 and session.closed
    await vault.aclose()
    assert credential.closed == 1
    with pytest.raises(ClosedError):
        await vault.load(AlphaOnly)


async def test_shared_credential_can_stay_open(keyvault_emulator: KeyVaultEmulator) -> None:
    credential = TrackingCredential(keyvault_emulator.credential())
    vault = KeyVault(
        keyvault_emulator.vault_url,
        credential,
        ca_file=keyvault_emulator.ca_file,
        close_credential=False,
    )
    await vault.aclose()  # never opened: still fine
    assert credential.closed == 0
    with pytest.raises(ClosedError):
        await vault.load(AlphaOnly)


async def test_close_during_load_raises_closed_error(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    seed_three(keyvault_emulator)
    keyvault_emulator.faults.latency(100)
    vault = make_vault()
    task = asyncio.create_task(vault.load(Three))
    await asyncio.sleep(0.03)
    await vault.aclose()
    with pytest.raises(ClosedError):
        await task
