"""get_secret_raw answers and fails exactly as SecretClient.get_secret (real SDK, emulator)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from azure.core.exceptions import DecodeError, HttpResponseError
from azure.keyvault.secrets.aio import SecretClient

from kvconfig._client import (
    VaultClients,
    build_clients,
    build_session,
    build_ssl_context,
    signalling,
)
from kvconfig._rawget import RawSecret, get_secret_raw
from kvconfig._translate import classify
from kvconfig.emulator import KeyVaultEmulator

from .conftest import gets

T0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


Read = Callable[..., Awaitable[RawSecret]]


@pytest.fixture
async def clients(keyvault_emulator: KeyVaultEmulator) -> AsyncIterator[VaultClients]:
    """kvconfig's own clients (trimmed pipeline) on the emulator."""
    session = build_session(build_ssl_context(keyvault_emulator.ca_file), limit=8, trust_env=False)
    credential = signalling(keyvault_emulator.credential())
    built = build_clients(keyvault_emulator.vault_url, credential, session, trust_env=False)
    try:
        yield built
    finally:
        await built.close()
        await built.close()  # idempotent
        await session.close()


@pytest.fixture
def client(clients: VaultClients) -> SecretClient:
    return clients.secrets


@pytest.fixture(params=["direct", "pipeline", "send_request"])
async def read(
    request: pytest.FixtureRequest, clients: VaultClients, keyvault_emulator: KeyVaultEmulator
) -> Read:
    """Every route: direct (a header the pipeline authorised), the reader's own pipeline, and
    the fallback through send_request."""
    if request.param == "direct":
        keyvault_emulator.set_secret("warm-up", "w")
        await clients.reader.get("warm-up")  # through the pipeline: challenge, token, header

        async def direct(name: str, version: str | None = None, **kw: Any) -> RawSecret:
            before = clients.reader.direct_requests
            result = await clients.reader.get(name, version, **kw)
            assert clients.reader.direct_requests == before + 1
            return result

        return direct
    if request.param == "pipeline":
        return clients.reader.get

    async def via_send_request(name: str, version: str | None = None, **kw: Any) -> RawSecret:
        return await get_secret_raw(clients.secrets, name, version, **kw)

    return via_send_request


def _as_raw(secret: Any) -> RawSecret:
    props = secret.properties
    return RawSecret(
        version=props.version,
        value=secret.value if secret.value is not None else "",
        enabled=props.enabled,
        content_type=props.content_type,
        created=props.created_on,
        updated=props.updated_on,
        expires_on=props.expires_on,
        not_before=props.not_before,
    )


async def test_same_fields_as_get_secret(
    keyvault_emulator: KeyVaultEmulator, client: SecretClient, read: Read
) -> None:
    old = keyvault_emulator.set_secret("full", "first")
    keyvault_emulator.set_secret(
        "full",
        '{"k": "v"}',
        content_type="application/json",
        expires_on=T0 + dt.timedelta(days=1),
        not_before=T0 - dt.timedelta(days=1000),
    )
    keyvault_emulator.set_secret("plain", "p")
    keyvault_emulator.set_secret("empty", "")
    for name, version in [("full", None), ("full", old), ("plain", None), ("empty", None)]:
        raw = await read(name, version)
        assert raw == _as_raw(await client.get_secret(name, version))
    assert (await read("full", old)).value == "first"
    assert (await read("full")).expires_on == T0 + dt.timedelta(days=1)


async def test_first_request_takes_the_challenge(
    keyvault_emulator: KeyVaultEmulator, clients: VaultClients, read: Read
) -> None:
    """One challenge, one token, shared by the reader and the SDK client (list pages)."""
    keyvault_emulator.set_secret("a", "1")
    keyvault_emulator.clear_requests()
    assert (await read("a")).value == "1"
    assert (await clients.secrets.get_secret("a")).value == "1"
    assert (await read("a")).value == "1"
    statuses = [r.status for r in gets(keyvault_emulator)]
    # The challenge comes first unless the "direct" route's warm-up already took it.
    assert statuses in ([401, 200, 200, 200], [200, 200, 200])


async def _both(
    client: SecretClient, read: Read, name: str, version: str | None = None
) -> list[HttpResponseError]:
    errors: list[HttpResponseError] = []
    with pytest.raises(HttpResponseError) as raw:
        await read(name, version)
    errors.append(raw.value)
    with pytest.raises(HttpResponseError) as sdk:
        await client.get_secret(name, version)
    errors.append(sdk.value)
    return errors


@pytest.mark.parametrize("case", ["missing", "missing-version", "disabled", "503", "429"])
async def test_errors_match_get_secret(
    keyvault_emulator: KeyVaultEmulator, client: SecretClient, read: Read, case: str
) -> None:
    keyvault_emulator.set_secret("off", "x", enabled=False)
    keyvault_emulator.set_secret("on", "x")
    name, version = {
        "missing": ("nope", None),
        "missing-version": ("on", "0" * 32),
        "disabled": ("off", None),
        "503": ("on", None),
        "429": ("on", None),
    }[case]
    if case in ("503", "429"):
        keyvault_emulator.faults.fail_next(2, status=int(case), retry_after=7)
    raw_error, sdk_error = await _both(client, read, name, version)
    assert type(raw_error) is type(sdk_error)
    assert raw_error.status_code == sdk_error.status_code
    url = keyvault_emulator.vault_url
    raw_verdict = classify(raw_error, vault_url=url, secret_name=name)
    sdk_verdict = classify(sdk_error, vault_url=url, secret_name=name)
    assert raw_verdict is not None and sdk_verdict is not None
    assert (raw_verdict.outcome, raw_verdict.reason, raw_verdict.retry_after) == (
        sdk_verdict.outcome,
        sdk_verdict.reason,
        sdk_verdict.retry_after,
    )


async def test_timeouts_reach_the_transport(
    keyvault_emulator: KeyVaultEmulator, read: Read
) -> None:
    keyvault_emulator.set_secret("a", "1")
    await read("a")  # challenge and token done
    keyvault_emulator.faults.latency(2000)
    with pytest.raises(Exception) as info:
        await read("a", read_timeout=0.1, connection_timeout=0.1)
    keyvault_emulator.faults.clear()
    verdict = classify(info.value, vault_url=keyvault_emulator.vault_url, secret_name="a")
    assert verdict is not None and verdict.outcome.name == "TRANSIENT"


def test_a_body_that_is_not_a_bundle_raises_without_the_body() -> None:
    from kvconfig import _rawget

    for body in (b"not json sup3r-s3cret", b'{"value": 5}', b"[1]"):
        with pytest.raises((ValueError, TypeError, AttributeError, KeyError)):
            _rawget._parse(__import__("json").loads(body))
    error = DecodeError("the vault's answer for secret 'a' is not a secret bundle")
    assert "sup3r" not in str(error)


async def test_direct_401_goes_back_through_the_challenge_policy(
    keyvault_emulator: KeyVaultEmulator, clients: VaultClients
) -> None:
    keyvault_emulator.set_secret("a", "1")
    await clients.reader.get("a")  # authorised through the pipeline
    keyvault_emulator.clear_requests()
    keyvault_emulator.faults.fail_next(1, status=401)
    assert (await clients.reader.get("a")).value == "1"
    assert clients.reader.direct_requests == 1
    assert [r.status for r in gets(keyvault_emulator)] == [401, 200]
    assert (await clients.reader.get("a")).value == "1"  # re-authorised: direct again
    assert clients.reader.direct_requests == 2


async def test_direct_401_twice_is_refused_after_one_resend(
    keyvault_emulator: KeyVaultEmulator, clients: VaultClients
) -> None:
    """The direct 401 is the challenge policy's first answer (replayed, not re-sent): a new
    token, one re-send, a second 401 gives up. Exactly get_secret's two requests."""
    keyvault_emulator.set_secret("a", "1")
    await clients.reader.get("a")
    keyvault_emulator.clear_requests()
    keyvault_emulator.faults.fail_next(2, status=401)
    with pytest.raises(HttpResponseError) as info:
        await clients.reader.get("a")
    assert info.value.status_code == 401
    assert clients.reader.direct_requests == 1
    assert [r.status for r in gets(keyvault_emulator)] == [401, 401]
    assert (await clients.reader.get("a")).value == "1"  # through the policy again
    assert clients.reader.direct_requests == 1


async def test_header_not_reused_past_its_window(
    keyvault_emulator: KeyVaultEmulator, clients: VaultClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kvconfig._rawget._REUSE_S", 0.0)
    keyvault_emulator.set_secret("a", "1")
    for _ in range(3):
        assert (await clients.reader.get("a")).value == "1"
    assert clients.reader.direct_requests == 0
