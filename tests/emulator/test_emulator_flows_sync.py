"""The seed documents' flows with the real sync (requests-based) SecretClient over TLS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from kvconfig.emulator import KeyVaultEmulator


@pytest.fixture
def client(emulator_thread: KeyVaultEmulator) -> Iterator[SecretClient]:
    emu = emulator_thread
    with SecretClient(
        emu.vault_url,
        emu.sync_credential(),
        verify_challenge_resource=False,
        connection_verify=str(emu.ca_file),
    ) as client:
        yield client


def test_sync_full_flow(emulator_thread: KeyVaultEmulator, client: SecretClient) -> None:
    emu = emulator_thread
    created = client.set_secret("Sync-Secret", "one", content_type="text/plain", tags={"a": "b"})
    assert created.name == "Sync-Secret"
    assert client.get_secret("sync-secret").value == "one"
    client.set_secret("sync-secret", "two")
    assert client.get_secret("SYNC-SECRET").value == "two"
    assert client.get_secret("sync-secret", created.properties.version).value == "one"

    props = client.update_secret_properties("sync-secret", enabled=False, tags={"x": "y"})
    assert props.enabled is False and props.tags == {"x": "y"}
    with pytest.raises(HttpResponseError) as info:
        client.get_secret("sync-secret")
    assert info.value.status_code == 403
    client.update_secret_properties("sync-secret", enabled=True)

    versions = list(client.list_properties_of_secret_versions("sync-secret"))
    assert len(versions) == 2

    for i in range(30):
        client.set_secret(f"bulk-{i:02d}", str(i))
    names = [p.name for p in client.list_properties_of_secrets(max_page_size=10)]
    assert len(names) == 31
    assert sum(1 for r in emu.requests if r.path == "/secrets" and r.method == "GET") == 4

    deleted = client.begin_delete_secret("bulk-00").result()
    assert deleted.name == "bulk-00"
    assert [d.name for d in client.list_deleted_secrets()] == ["bulk-00"]
    assert client.get_deleted_secret("bulk-00").name == "bulk-00"
    with pytest.raises(ResourceExistsError):
        client.set_secret("bulk-00", "x")
    client.begin_recover_deleted_secret("bulk-00").result()
    assert client.get_secret("bulk-00").value == "0"

    blob = client.backup_secret("bulk-01")
    client.begin_delete_secret("bulk-01").result()
    client.purge_deleted_secret("bulk-01")
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret("bulk-01")
    assert client.restore_secret_backup(blob).name == "bulk-01"
    assert client.get_secret("bulk-01").value == "1"

    with pytest.raises(ResourceNotFoundError):
        client.get_secret("never-set")
