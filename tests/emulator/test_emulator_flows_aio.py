"""The seed documents' flows with the real aio SecretClient over TLS."""

from __future__ import annotations

import logging

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from kvconfig.emulator import KeyVaultEmulator


def _count(emu: KeyVaultEmulator, method: str, path: str) -> int:
    return sum(1 for r in emu.requests if r.method == method and r.path == path)


async def test_create_get_update_disable(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    async with emu.secret_client() as client:
        created = await client.set_secret(
            "api-key", "v1", content_type="text/plain", tags={"team": "core"}
        )
        assert created.properties.content_type == "text/plain"
        assert created.properties.tags == {"team": "core"}
        assert created.properties.enabled is True
        assert created.properties.recovery_level == "Recoverable+Purgeable"
        assert created.properties.created_on is not None

        second = await client.set_secret("api-key", "v2")
        assert second.properties.version != created.properties.version
        assert (await client.get_secret("api-key")).value == "v2"
        assert (await client.get_secret("api-key", created.properties.version)).value == "v1"

        updated = await client.update_secret_properties(
            "api-key", content_type="application/json", tags={"team": "platform"}, enabled=False
        )
        assert updated.version == second.properties.version
        assert updated.content_type == "application/json"
        assert updated.tags == {"team": "platform"}
        assert updated.enabled is False

        with pytest.raises(HttpResponseError) as info:
            await client.get_secret("api-key")
        assert info.value.status_code == 403
        assert info.value.error is not None and info.value.error.code == "Forbidden"
        # The older version is still enabled and readable.
        assert (await client.get_secret("api-key", created.properties.version)).value == "v1"

        # Disabled secrets are still listed (only value reads are refused).
        listed = [p async for p in client.list_properties_of_secrets()]
        assert [(p.name, p.enabled) for p in listed] == [("api-key", False)]


async def test_list_properties_pages(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    emu.seed({f"setting-{i:02d}": str(i) for i in range(60)})
    async with emu.secret_client() as client:
        names = [p.name async for p in client.list_properties_of_secrets()]
        assert names == [f"setting-{i:02d}" for i in range(60)]
        assert _count(emu, "GET", "/secrets") == 3 + 1  # 25 + 25 + 10, plus the 401 challenge
        emu.clear_requests()
        small = [p.name async for p in client.list_properties_of_secrets(max_page_size=7)]
        assert small == names
        assert _count(emu, "GET", "/secrets") == 9
    pages = [r for r in emu.requests if r.path == "/secrets"]
    assert all(r.query.get("maxresults") == "7" for r in pages)
    assert all("$skiptoken" in r.query for r in pages[1:])


async def test_list_versions(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    versions = [emu.set_secret("rotated", f"value-{i}") for i in range(30)]
    async with emu.secret_client() as client:
        listed = [p async for p in client.list_properties_of_secret_versions("rotated")]
    assert [p.version for p in listed] == versions
    assert all(p.name == "rotated" for p in listed)
    assert _count(emu, "GET", "/secrets/rotated/versions") == 2 + 1


async def test_list_versions_of_unknown_or_deleted_name_is_empty(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    # Key Vault answers 200 {"value": [], "nextLink": null} for a name that never existed (the
    # SDK's recorded session); the SDK's sample test iterates it expecting no error.
    emu = keyvault_emulator
    emu.seed({"gone": "1"})
    emu.delete_secret("gone")
    async with emu.secret_client() as client:
        assert [p async for p in client.list_properties_of_secret_versions("never")] == []
        assert [p async for p in client.list_properties_of_secret_versions("gone")] == []
    statuses = {r.status for r in emu.requests if r.path.endswith("/versions")}
    assert statuses == {401, 200}


async def test_delete_recover_purge(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    emu.seed({"gone": "1", "kept": "2", "purged": "3"})
    async with emu.secret_client() as client:
        await client.get_secret("kept")  # warm the challenge so counts below are exact
        emu.clear_requests()

        deleted = await client.delete_secret("gone")
        assert deleted.name == "gone"
        assert deleted.recovery_id == f"{emu.vault_url}/deletedsecrets/gone"
        assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
        # Deleted state is visible at once: the poller finishes on its first poll.
        assert [(r.method, r.path, r.status) for r in emu.requests] == [
            ("DELETE", "/secrets/gone", 200),
            ("GET", "/deletedsecrets/gone", 200),
        ]
        with pytest.raises(ResourceNotFoundError):
            await client.get_secret("gone")
        with pytest.raises(ResourceExistsError) as info:
            await client.set_secret("gone", "again")
        assert info.value.error is not None and info.value.error.code == "Conflict"

        await client.delete_secret("purged")
        listed = sorted([d.name async for d in client.list_deleted_secrets()])
        assert listed == ["gone", "purged"]
        got = await client.get_deleted_secret("gone")
        assert got.properties.version == deleted.properties.version

        recovered = await client.recover_deleted_secret("gone")
        assert recovered.name == "gone"
        assert (await client.get_secret("gone")).value == "1"

        await client.purge_deleted_secret("purged")
        assert any(r.path == "/deletedsecrets/purged" and r.status == 204 for r in emu.requests)
        with pytest.raises(ResourceNotFoundError):
            await client.get_deleted_secret("purged")
        # The name is free again after a purge.
        await client.set_secret("purged", "new")
        assert [d.name async for d in client.list_deleted_secrets()] == []


async def test_backup_then_restore(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    first = emu.set_secret("cert-pass", "old", content_type="text/plain")
    emu.set_secret("cert-pass", "new", tags={"k": "v"})
    async with emu.secret_client() as client:
        blob = await client.backup_secret("cert-pass")
        assert isinstance(blob, bytes) and b"new" not in blob and b"old" not in blob
        with pytest.raises(ResourceExistsError):
            await client.restore_secret_backup(blob)  # the name is in use
        await client.delete_secret("cert-pass")
        await client.purge_deleted_secret("cert-pass")
        restored = await client.restore_secret_backup(blob)
        assert restored.name == "cert-pass"
        assert restored.tags == {"k": "v"}
        assert (await client.get_secret("cert-pass")).value == "new"
        assert (await client.get_secret("cert-pass", first)).value == "old"
        versions = [p async for p in client.list_properties_of_secret_versions("cert-pass")]
        assert len(versions) == 2


async def test_missing_name_is_resource_not_found(keyvault_emulator: KeyVaultEmulator) -> None:
    async with keyvault_emulator.secret_client() as client:
        with pytest.raises(ResourceNotFoundError) as info:
            await client.get_secret("nope")
        assert info.value.error is not None and info.value.error.code == "SecretNotFound"
        with pytest.raises(ResourceNotFoundError):
            await client.get_secret("nope", "0" * 32)
        with pytest.raises(ResourceNotFoundError):
            await client.delete_secret("nope")


async def test_logging_enable(
    keyvault_emulator: KeyVaultEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    keyvault_emulator.seed({"logged": "hidden-value"})
    caplog.set_level(logging.DEBUG, logger="azure")
    async with keyvault_emulator.secret_client(logging_enable=True) as client:
        assert (await client.get_secret("logged")).value == "hidden-value"
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "/secrets/logged/" in messages
    assert "x-ms-keyvault-service-version" in messages


@pytest.mark.parametrize("api_version", ["7.0", "7.2", "7.4", "7.6", "2025-07-01", "2026-04-01"])
async def test_api_versions(keyvault_emulator: KeyVaultEmulator, api_version: str) -> None:
    emu = keyvault_emulator
    async with emu.secret_client(api_version=api_version) as client:
        await client.set_secret("v", "1")
        assert (await client.get_secret("v")).value == "1"
        props = [p async for p in client.list_properties_of_secrets()]
        assert [p.name for p in props] == ["v"]
        await client.delete_secret("v")
    assert {r.query["api-version"] for r in emu.requests} == {api_version}
    assert all(r.status < 400 or r.status == 401 for r in emu.requests)


@pytest.mark.keyvault_secrets({"from-marker": "1"})
async def test_marker_seeds(keyvault_emulator: KeyVaultEmulator) -> None:
    async with keyvault_emulator.secret_client() as client:
        assert (await client.get_secret("from-marker")).value == "1"
