"""Identities with per-vault secret permissions (403 in Key Vault's shape) and tokens as Entra
issues them: one audience, a lifetime, expiry and revocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlencode

import aiohttp
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from emulator_helpers import Raw
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig.emulator import CertificateAuthority, KeyVaultEmulator
from tests.conftest import VaultFactory


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVCONFIG_IDENTITY_TEST_")

    db_password: SecretStr
    api_key: str


SEED = {"db-password": "pw-1", "api-key": "key-1"}


def _msi(emu: KeyVaultEmulator, **query: str) -> tuple[int, dict[str, str]]:
    params = {"api-version": "2019-08-01", "resource": "https://vault.azure.net", **query}
    request = urllib.request.Request(
        f"{emu.identity_endpoint}?{urlencode(params)}",
        headers={"X-IDENTITY-HEADER": emu.identity_header},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def test_get_only_identity_reads_values_and_is_refused_a_list(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    emu = keyvault_emulator
    emu.seed(SEED)
    reader = emu.add_identity("reader-app", ["get"])
    async with emu.secret_client(credential=emu.credential("reader-app")) as client:
        assert (await client.get_secret("api-key")).value == "key-1"
        with pytest.raises(HttpResponseError) as caught:
            [p async for p in client.list_properties_of_secrets()]
        with pytest.raises(HttpResponseError) as refused_set:
            await client.set_secret("api-key", "key-2")
    error = caught.value
    assert error.status_code == 403
    assert error.error is not None and error.error.code == "Forbidden"
    assert error.message.startswith(
        f"(Forbidden) The user, group or application 'appid=reader-app;oid={reader.object_id};"
        "iss=https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/' does not have "
        "secrets list permission on key vault 'default;location=local'."
    )
    assert "secrets set permission" in refused_set.value.message
    assert [r.status for r in emu.requests if r.path == "/secrets"] == [403]


async def test_deleted_secrets_are_read_with_get_and_listed_with_list(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    """As the REST reference says: get_deleted_secret needs secrets/get, list_deleted_secrets
    secrets/list (an identity with get alone reads a deleted secret but cannot list them)."""
    emu = keyvault_emulator
    emu.seed(SEED)
    emu.add_identity("reader-app", ["get"])
    async with emu.secret_client() as admin:
        await admin.delete_secret("api-key")
    async with emu.secret_client(credential=emu.credential("reader-app")) as client:
        assert (await client.get_deleted_secret("api-key")).name == "api-key"
        with pytest.raises(HttpResponseError) as refused:
            [d async for d in client.list_deleted_secrets()]
    assert "secrets list permission" in refused.value.message


async def test_permissions_are_per_vault(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    await emu.add_vault("second")
    emu.seed({"x": "1"})
    emu.seed({"x": "2"}, vault="second")
    emu.add_identity("app", vaults={"second": []})  # all on other vaults, nothing on `second`
    async with emu.secret_client(credential=emu.credential("app")) as client:
        assert (await client.get_secret("x")).value == "1"
    async with emu.secret_client("second", credential=emu.credential("app")) as client:
        with pytest.raises(HttpResponseError) as caught:
            await client.get_secret("x")
    assert caught.value.status_code == 403
    assert "secrets get permission on key vault 'second;location=local'" in caught.value.message
    emu.set_permissions("app", "second", ["get", "list"])
    async with emu.secret_client("second", credential=emu.credential("app")) as client:
        assert (await client.get_secret("x")).value == "2"
    with pytest.raises(ValueError, match="unknown secret permission"):
        emu.add_identity("typo", ["gett"])


async def test_load_and_watch_with_a_get_only_identity(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    emu = keyvault_emulator
    emu.seed(SEED)
    emu.seed({f"other-{i:02d}": "x" for i in range(3)})
    emu.add_identity("reader-app", ["get"])
    vault = make_vault(credential=emu.credential("reader-app"))
    async with vault:
        settings = await vault.load(Settings)
        assert settings.api_key == "key-1"
        assert settings.db_password.get_secret_value() == "pw-1"
        async with vault.watch(Settings, interval=60, clock_skew=0) as live:
            emu.clear_requests()
            emu.set_secret("api-key", "key-2")
            await live.refresh()
            assert live.current.api_key == "key-2"
            assert live.health.mode == "get"  # the list is forbidden: per-secret GETs
            assert not [r for r in emu.requests if r.path == "/secrets" and r.status == 200]
            gets = [r for r in emu.requests if r.method == "GET" and r.path != "/secrets"]
            assert {r.status for r in gets} == {200}


def test_managed_identity_endpoint_honours_client_id(keyvault_ca: CertificateAuthority) -> None:
    """DefaultAzureCredential with AZURE_CLIENT_ID gets that identity's token, end to end."""
    from kvconfig.emulator import EmulatorThread

    child = """
from azure.core.exceptions import HttpResponseError
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
import os
client = SecretClient("https://default.vault.azure.net", DefaultAzureCredential())
print(client.get_secret("api-key").value)
try:
    list(client.list_properties_of_secrets())
except HttpResponseError as exc:
    print(exc.status_code, exc.error.code)
"""
    with EmulatorThread(ca=keyvault_ca) as emu:
        emu.seed(SEED)
        emu.add_identity("11111111-2222-3333-4444-555555555555", ["get"])
        assert _msi(emu, client_id="nobody")[0] == 400
        status, body = _msi(emu, client_id="11111111-2222-3333-4444-555555555555")
        assert status == 200 and body["client_id"] == "11111111-2222-3333-4444-555555555555"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_"))}
        env |= emu.environment() | {"AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555"}
        result = subprocess.run(
            [sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["key-1", "403", "Forbidden"]


# -- tokens --------------------------------------------------------------------------------------


async def test_a_token_for_another_resource_is_401(raw: Raw) -> None:
    async with raw.emu.credential() as credential:
        other = (await credential.get_token("https://storage.azure.com/.default")).token
    status, body, headers = await raw.request("GET", "/secrets", auth=f"Bearer {other}")
    assert status == 401 and body is not None
    assert body["error"]["message"] == (
        "AKV10022: Invalid audience. Expected https://vault.azure.net, "
        "found: https://storage.azure.com."
    )
    assert headers["WWW-Authenticate"].startswith("Bearer authorization=")


async def test_token_lifetime_is_configurable(keyvault_ca: CertificateAuthority) -> None:
    async with (
        KeyVaultEmulator(ca=keyvault_ca, token_lifetime_s=120) as emu,
        emu.credential() as credential,
    ):
        token = await credential.get_token("https://vault.azure.net/.default")
        assert 0 < token.expires_on - time.time() <= 120
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                emu.identity_endpoint,
                params={"api-version": "2019-08-01", "resource": "https://vault.azure.net"},
                headers={"X-IDENTITY-HEADER": emu.identity_header},
            ) as reply,
        ):
            body = await reply.json()
        assert 0 < int(body["expires_on"]) - time.time() <= 120


async def test_expired_and_revoked_tokens_force_a_new_token(
    keyvault_emulator: KeyVaultEmulator, raw: Raw
) -> None:
    emu = keyvault_emulator
    emu.seed(SEED)
    async with emu.secret_client() as client:
        await client.get_secret("api-key")
        emu.faults.expire_tokens()
        emu.clear_requests()
        # The SDK's challenge policy answers the 401 with a fresh token from its credential.
        assert (await client.get_secret("api-key")).value == "key-1"
        assert [r.status for r in emu.requests] == [401, 200]
    status, body, _ = await raw.request("GET", "/secrets/api-key")  # raw's token predates it
    assert status == 401 and body is not None
    assert body["error"]["message"] == "AKV10032: The access token has expired."

    emu.add_identity("app")
    async with emu.secret_client(credential=emu.credential("app")) as app:
        await app.get_secret("api-key")
        emu.faults.revoke_tokens("app")
        async with emu.secret_client() as other:
            emu.clear_requests()
            assert (await other.get_secret("api-key")).value == "key-1"  # not revoked
            # (one 401 at most: a challenge unless the SDK cached it for this authority)
            assert [r.status for r in emu.requests] in ([200], [401, 200])
        emu.clear_requests()
        assert (await app.get_secret("api-key")).value == "key-1"  # re-authenticated
        assert [r.status for r in emu.requests] == [401, 200]
    emu.faults.clear()


async def test_a_credential_that_keeps_a_revoked_token_fails_cleanly(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    class Stale:
        """A credential that caches its token and never refreshes it."""

        def __init__(self) -> None:
            self.inner = keyvault_emulator.credential()
            self.token = None

        async def get_token(self, *scopes: str, **kwargs: object) -> object:
            if self.token is None:
                self.token = await self.inner.get_token(*scopes)
            return self.token

        async def close(self) -> None:
            return None

    keyvault_emulator.seed(SEED)
    async with keyvault_emulator.secret_client(credential=Stale()) as client:
        await client.get_secret("api-key")
        keyvault_emulator.faults.revoke_tokens()
        with pytest.raises(ClientAuthenticationError) as caught:
            await client.get_secret("api-key")
    assert caught.value.status_code == 401
    assert "revoked" in caught.value.message


def test_cli_identity_flags() -> None:
    from kvconfig.emulator._access import PERMISSIONS
    from kvconfig.emulator._cli import _declare_identities

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, frozenset[str], dict[str, frozenset[str]]]] = []

        def add_identity(
            self,
            client_id: str,
            permissions: frozenset[str],
            *,
            vaults: dict[str, frozenset[str]],
            client_secret: str | None,
        ) -> None:
            self.calls.append((client_id, permissions, vaults))
            assert client_secret == ("s3" if client_id == "sp" else None)

    emu = Recorder()
    flags = ["reader:get,list@default", "reader:get", "default:get", "ops", "sp:get"]
    _declare_identities(emu, flags, ["sp=s3"])  # type: ignore[arg-type]
    assert emu.calls == [
        ("sp", frozenset({"get"}), {}),
        ("reader", frozenset({"get"}), {"default": frozenset({"get", "list"})}),
        ("00000000-0000-0000-0000-00000000e1e1", frozenset({"get"}), {}),
        ("ops", PERMISSIONS, {}),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "kvconfig", "emulator", "--identity", "app:gett"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("kvconfig emulator: unknown secret permission(s) gett")
    assert result.stdout == ""


SERVICE_PRINCIPAL_CHILD = """
import asyncio, os
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import DefaultAzureCredential, EnvironmentCredential
from azure.identity.aio import EnvironmentCredential as AioEnvironmentCredential
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets.aio import SecretClient as AioSecretClient

url = f"https://{os.environ['KEY_VAULT_NAME']}.vault.azure.net"
print(SecretClient(url, DefaultAzureCredential()).get_secret("api-key").value)
try:
    list(SecretClient(url, EnvironmentCredential()).list_properties_of_secrets())
except HttpResponseError as exc:
    print(exc.status_code, exc.error.code)

async def main():
    async with AioEnvironmentCredential() as credential, AioSecretClient(url, credential) as client:
        print((await client.get_secret("db-password")).value)

asyncio.run(main())
os.environ["AZURE_CLIENT_SECRET"] = "wrong"
try:
    SecretClient(url, EnvironmentCredential()).get_secret("api-key")
except ClientAuthenticationError as exc:
    print("refused", type(exc).__name__)
"""


def test_service_principal_through_environment_credential(
    keyvault_ca: CertificateAuthority,
) -> None:
    """The SDK README's flow: AZURE_CLIENT_ID/SECRET/TENANT_ID, no AZURE_AUTHORITY_HOST."""
    from kvconfig.emulator import EmulatorThread

    with EmulatorThread(ca=keyvault_ca) as emu:
        emu.seed(SEED)
        emu.add_identity("sp-app", ["get"], client_secret="sp-secret")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_"))}
        env |= emu.environment() | {
            "AZURE_CLIENT_ID": "sp-app",
            "AZURE_CLIENT_SECRET": "sp-secret",
            "AZURE_TENANT_ID": emu.tenant_id,
        }
        result = subprocess.run(
            [sys.executable, "-c", SERVICE_PRINCIPAL_CHILD],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n")[:4] == [
            "key-1",
            "403 Forbidden",
            "pw-1",
            "refused ClientAuthenticationError",
        ]
        assert "sp-secret" not in repr(emu.add_identity("sp-app", client_secret="sp-secret"))
