"""SQLite persistence in-process: every kind of write survives a restart on the same file."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError

from kvconfig.emulator import CertificateAuthority, KeyVaultEmulator


async def test_state_survives_a_restart(tmp_path: Path, keyvault_ca: CertificateAuthority) -> None:
    data = tmp_path / "kv.db"
    async with KeyVaultEmulator(data=data, ca=keyvault_ca) as emu:
        await emu.add_vault("team")
        async with emu.secret_client() as client:
            first = await client.set_secret("Kept", "1", tags={"a": "b"})
            await client.set_secret("kept", "2")
            await client.update_secret_properties("kept", first.properties.version, enabled=False)
            await client.set_secret("deleted", "x")
            await client.delete_secret("deleted")
            await client.set_secret("purged", "x")
            await client.delete_secret("purged")
            await client.purge_deleted_secret("purged")
        emu.set_secret("direct", "d", vault="team")

    async with KeyVaultEmulator(data=data, ca=keyvault_ca) as emu:
        assert set(emu.vaults) == {"default", "team"}
        async with emu.secret_client() as client, emu.secret_client(vault="team") as team:
            assert (await client.get_secret("kept")).value == "2"
            versions = [p async for p in client.list_properties_of_secret_versions("kept")]
            assert len(versions) == 2
            assert (versions[0].version, versions[0].enabled) == (first.properties.version, False)
            assert versions[0].tags == {"a": "b"} and versions[0].name == "Kept"
            assert [d.name async for d in client.list_deleted_secrets()] == ["deleted"]
            with pytest.raises(ResourceNotFoundError):
                await client.get_deleted_secret("purged")
            assert (await team.get_secret("direct")).value == "d"
