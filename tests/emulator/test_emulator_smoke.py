"""The first round trip: the real aio SecretClient against the emulator over TLS."""

from __future__ import annotations

import datetime as dt

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from kvconfig.emulator import KeyVaultEmulator


async def test_set_get_list_with_the_real_aio_client(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    async with emu.secret_client() as client:
        created = await client.set_secret("Db-Password", "s3cret", content_type="text/plain")
        assert created.value == "s3cret"
        assert created.properties.version is not None
        assert len(created.properties.version) == 32
        assert created.id == f"{emu.vault_url}/secrets/Db-Password/{created.properties.version}"

        latest = await client.get_secret("db-password")  # case-insensitive, case kept
        assert latest.name == "Db-Password"
        assert latest.value == "s3cret"
        by_version = await client.get_secret("db-password", created.properties.version)
        assert by_version.value == "s3cret"

        emu.seed({f"s{i:02d}": str(i) for i in range(30)})
        names = [p.name async for p in client.list_properties_of_secrets()]
        assert len(names) == 31

        with pytest.raises(ResourceNotFoundError):
            await client.get_secret("missing")

        emu.update_secret("s01", enabled=False)
        with pytest.raises(HttpResponseError) as info:
            await client.get_secret("s01")
        assert info.value.status_code == 403
        assert info.value.error is not None
        assert info.value.error.code == "Forbidden"

    statuses = [(r.method, r.status) for r in emu.requests]
    assert statuses[:2] == [("PUT", 401), ("PUT", 200)]
    lists = [r for r in emu.requests if r.path == "/secrets" and r.method == "GET"]
    assert len(lists) == 2  # 31 secrets, 25 per page
    assert all(r.vault == "default" for r in emu.requests)


async def test_faults_latency_and_fail_next(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    emu.seed({"a": "1"})
    emu.faults.latency(5)
    emu.faults.fail_next(2, status=503)
    async with emu.secret_client(retry_backoff_factor=0.01) as client:
        assert (await client.get_secret("a")).value == "1"
    assert [r.status for r in emu.requests] == [503, 503, 401, 200]


def test_public_surface_is_curated() -> None:
    import kvconfig.emulator as package

    # (pytest adds "@py_builtins"-style names to the modules it assert-rewrites)
    public = {n for n in vars(package) if n[0] not in "_@" and n != "annotations"}
    assert sorted(package.__all__) == package.__all__
    assert set(package.__all__) == public


async def test_seed_can_backdate_versions(keyvault_emulator: KeyVaultEmulator) -> None:
    """``created=`` sets a version's created and updated times (a vault set up long ago)."""
    long_ago = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    keyvault_emulator.seed({"old": "1"}, created=long_ago)
    async with keyvault_emulator.secret_client() as client:
        props = (await client.get_secret("old")).properties
    assert props.created_on == props.updated_on == long_ago
