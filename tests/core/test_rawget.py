"""get_secret_raw answers and fails exactly as SecretClient.get_secret (real SDK, emulator)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.exceptions import DecodeError, HttpResponseError
from azure.keyvault.secrets.aio import SecretClient

from kvconfig._client import build_secret_client, build_session, build_ssl_context, signalling
from kvconfig._rawget import RawSecret, get_secret_raw
from kvconfig._translate import classify
from kvconfig.emulator import KeyVaultEmulator

from .conftest import gets

T0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture
async def client(keyvault_emulator: KeyVaultEmulator) -> AsyncIterator[SecretClient]:
    """kvconfig's own client (trimmed pipeline) on the emulator."""
    session = build_session(build_ssl_context(keyvault_emulator.ca_file), limit=8, trust_env=False)
    credential = signalling(keyvault_emulator.credential())
    secret_client = build_secret_client(
        keyvault_emulator.vault_url, credential, session, trust_env=False
    )
    try:
        yield secret_client
    finally:
        await secret_client.close()
        await session.close()


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
    keyvault_emulator: KeyVaultEmulator, client: SecretClient
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
        raw = await get_secret_raw(client, name, version)
        assert raw == _as_raw(await client.get_secret(name, version))
    assert (await get_secret_raw(client, "full", old)).value == "first"
    assert (await get_secret_raw(client, "full")).expires_on == T0 + dt.timedelta(days=1)


async def test_first_request_takes_the_challenge(
    keyvault_emulator: KeyVaultEmulator, client: SecretClient
) -> None:
    keyvault_emulator.set_secret("a", "1")
    keyvault_emulator.clear_requests()
    assert (await get_secret_raw(client, "a")).value == "1"
    assert [r.status for r in gets(keyvault_emulator)] == [401, 200]


async def _both(client: SecretClient, name: str, version: str | None = None) -> list[BaseException]:
    errors: list[BaseException] = []
    for read in (get_secret_raw, client.get_secret):
        with pytest.raises(HttpResponseError) as info:
            await read(client, name, version) if read is get_secret_raw else await read(
                name, version
            )  # type: ignore[call-arg, arg-type]
        errors.append(info.value)
    return errors


@pytest.mark.parametrize("case", ["missing", "missing-version", "disabled", "503", "429"])
async def test_errors_match_get_secret(
    keyvault_emulator: KeyVaultEmulator, client: SecretClient, case: str
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
    raw_error, sdk_error = await _both(client, name, version)
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
    keyvault_emulator: KeyVaultEmulator, client: SecretClient
) -> None:
    keyvault_emulator.set_secret("a", "1")
    await get_secret_raw(client, "a")  # challenge and token done
    keyvault_emulator.faults.latency(2000)
    with pytest.raises(Exception) as info:
        await get_secret_raw(client, "a", read_timeout=0.1, connection_timeout=0.1)
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
