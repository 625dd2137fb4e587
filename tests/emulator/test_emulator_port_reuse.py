"""A new emulator on a port an earlier one used starts cold in the SDK's challenge cache."""

from __future__ import annotations

from kvconfig.emulator import CertificateAuthority, KeyVaultEmulator


async def test_reused_port_gets_its_own_challenge(keyvault_ca: CertificateAuthority) -> None:
    async with KeyVaultEmulator(ca=keyvault_ca) as first:
        url = first.vault_url
        port = int(url.rsplit(":", 1)[1])
        first.seed({"a": "1"})
        async with first.secret_client() as client:
            await client.get_secret("a")
        assert [r.status for r in first.requests] == [401, 200]

    # Same authority, new server: the SDK's process-wide cache still knew the old challenge.
    async with KeyVaultEmulator(ca=keyvault_ca, port=port) as second:
        assert second.vault_url == url
        second.seed({"a": "2"})
        async with second.secret_client() as client:
            assert (await client.get_secret("a")).value == "2"
        assert [r.status for r in second.requests] == [401, 200]
