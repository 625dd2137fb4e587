"""Fault and load injection, throttling, and several vaults in one emulator."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from emulator_helpers import Raw

from kvconfig.emulator import KeyVaultEmulator


def _statuses(emu: KeyVaultEmulator) -> list[int]:
    return [r.status for r in emu.requests]


async def test_429_with_retry_after_is_retried(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    emu.seed({"a": "1"})
    async with emu.secret_client() as client:
        await client.get_secret("a")
        emu.clear_requests()
        emu.faults.fail_next(2, status=429, retry_after=0.01)
        assert (await client.get_secret("a")).value == "1"
        assert _statuses(emu) == [429, 429, 200]
        # With Retry-After the SDK retries any method, POST included.
        emu.clear_requests()
        emu.faults.fail_next(1, status=429, retry_after=0.01)
        assert await client.backup_secret("a")
        assert _statuses(emu) == [429, 200]


async def test_429_without_retry_after(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    emu.seed({"a": "1"})
    async with emu.secret_client(retry_backoff_factor=0.01) as client:
        await client.get_secret("a")
        emu.clear_requests()
        emu.faults.fail_next(2, status=429)
        assert (await client.get_secret("a")).value == "1"
        assert _statuses(emu) == [429, 429, 200]
        # The SDK gives up after 1 + retry_status (3) attempts.
        emu.clear_requests()
        emu.faults.fail_next(10, status=429)
        with pytest.raises(HttpResponseError) as info:
            await client.get_secret("a")
        assert info.value.status_code == 429
        assert info.value.error is not None and info.value.error.code == "Throttled"
        assert _statuses(emu) == [429] * 4
        for record in emu.requests:
            assert record.vault == "default"


async def test_fail_next_with_other_statuses(raw: Raw) -> None:
    emu = raw.emu
    emu.faults.fail_next(1, status=500)
    emu.faults.fail_next(1, status=503, retry_after=2)
    emu.faults.fail_next(1, status=401)
    status, body, headers = await raw.request("GET", "/secrets")
    assert status == 500 and body == {
        "error": {
            "code": "InternalServerError",
            "message": "An internal server error occurred. Please retry the request.",
        }
    }
    assert "Retry-After" not in headers
    status, body, headers = await raw.request("GET", "/secrets")
    assert status == 503 and body is not None and body["error"]["code"] == "ServiceUnavailable"
    assert headers["Retry-After"] == "2"
    status, _, headers = await raw.request("GET", "/secrets")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer authorization=")
    assert (await raw.request("GET", "/secrets"))[0] == 200


async def test_reset_drops_the_connection(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    emu.seed({"a": "1"})
    async with emu.secret_client(retry_backoff_factor=0.01) as client:
        await client.get_secret("a")
        emu.clear_requests()
        emu.faults.fail_next(1, status="reset")
        assert (await client.get_secret("a")).value == "1"  # the SDK retries the dropped request
        assert _statuses(emu) == [0, 200]
        emu.faults.fail_next(10, status="reset")
        with pytest.raises(ServiceRequestError):
            await client.get_secret("a", retry_total=0)
        emu.faults.clear()
        assert (await client.get_secret("a")).value == "1"


async def test_error_rate_and_outage(raw: Raw) -> None:
    emu = raw.emu
    emu.faults.error_rate(1.0, status=502)
    assert (await raw.request("GET", "/secrets"))[0] == 502
    emu.faults.error_rate(0.5)
    statuses = {(await raw.request("GET", "/secrets"))[0] for _ in range(60)}
    assert statuses == {200, 500}
    emu.faults.error_rate(0)
    emu.faults.outage(True)
    for _ in range(3):
        status, body, _ = await raw.request("GET", "/secrets")
        assert status == 503 and body is not None
        assert body["error"]["code"] == "ServiceUnavailable"
    emu.faults.outage(False)
    assert (await raw.request("GET", "/secrets"))[0] == 200
    with pytest.raises(ValueError):
        emu.faults.error_rate(1.5)


async def test_latency_is_applied(raw: Raw) -> None:
    emu = raw.emu
    emu.faults.latency((1, 3))
    assert 0.001 <= emu.faults.delay_s() <= 0.003
    emu.faults.latency(2)
    assert emu.faults.delay_s() == 0.002
    assert (await raw.request("GET", "/secrets"))[0] == 200
    emu.faults.latency(0)
    assert emu.faults.delay_s() == 0
    with pytest.raises(ValueError):
        emu.faults.latency((5, 1))


async def test_throttling_token_buckets(raw: Raw) -> None:
    emu = raw.emu
    # Real limits are 4000 transactions / 300 creates per 10 s; small ones keep the test quick.
    emu.faults.throttle(True, transactions=6, creates=2, window_s=3600)
    creates = [
        (await raw.request("PUT", f"/secrets/s{i}", json={"value": "v"}))[0] for i in range(3)
    ]
    assert creates == [200, 200, 429]
    reads = [(await raw.request("GET", "/secrets"))[0] for _ in range(5)]
    assert reads == [200, 200, 200, 200, 429]  # 2 creates + 4 reads = 6 transactions
    status, body, headers = await raw.request("GET", "/secrets")
    assert status == 429 and body is not None and body["error"]["code"] == "Throttled"
    assert "Retry-After" not in headers
    # Unauthenticated requests are not counted; the challenge still works.
    assert (await raw.request("GET", "/secrets", auth=None))[0] == 401
    emu.faults.throttle(False)
    assert (await raw.request("GET", "/secrets"))[0] == 200


async def test_throttling_is_per_vault(raw: Raw) -> None:
    emu = raw.emu
    await emu.add_vault("other")
    emu.faults.throttle(True, transactions=1, creates=1, window_s=3600)
    assert (await raw.request("GET", "/secrets"))[0] == 200
    assert (await raw.request("GET", "/secrets"))[0] == 429
    assert (await raw.request("GET", "/secrets", vault="other"))[0] == 200


async def test_several_vaults(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    second = await emu.add_vault("second")
    assert second == emu.vault_url_for("second") != emu.vault_url
    assert await emu.add_vault("second") == second  # idempotent
    emu.seed({"shared-name": "from-default"})
    emu.seed({"shared-name": "from-second"}, vault="second")
    async with emu.secret_client() as first, emu.secret_client(vault="second") as other:
        a = await first.get_secret("shared-name")
        b = await other.get_secret("shared-name")
        assert (a.value, b.value) == ("from-default", "from-second")
        assert b.id.startswith(f"{second}/secrets/shared-name/")
        assert b.properties.vault_url == second
        names = [p.name async for p in other.list_properties_of_secrets()]
        assert names == ["shared-name"]
    by_vault = {r.vault for r in emu.requests}
    assert by_vault == {"default", "second"}
    assert sum(1 for r in emu.requests if r.vault == "second" and r.status == 200) == 2
    with pytest.raises(KeyError):
        emu.vault_url_for("third")


async def test_untrusted_certificate_breaks_new_connections_only(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    """New handshakes fail certificate verification; turning the fault off restores trust."""
    emu = keyvault_emulator
    emu.seed({"a": "1"})
    async with emu.secret_client(retry_total=0) as client:
        assert (await client.get_secret("a")).value == "1"
        emu.faults.untrusted_certificate()
        assert (await client.get_secret("a")).value == "1"  # the pooled connection carries on
        emu.faults.fail_next(1, status="reset")
        with pytest.raises(ServiceRequestError):
            await client.get_secret("a")  # dropped
        with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get_secret("a")  # a new connection meets the untrusted certificate
        emu.faults.untrusted_certificate(False)
        assert (await client.get_secret("a")).value == "1"
