"""Parsing App Service Key Vault references (no I/O: the resolution is tested with the emulator)."""

from __future__ import annotations

import pytest

from kvconfig import ConfigurationError
from kvconfig._references import is_reference, parse_reference, vault_url_for_name


@pytest.mark.parametrize(
    ("text", "vault", "by_name", "name", "version"),
    [
        (
            "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-pass/)",
            "https://myvault.vault.azure.net",
            False,
            "db-pass",
            None,
        ),
        (
            "@Microsoft.KeyVault(SecretUri=https://MyVault.vault.azure.net/secrets/db-pass/"
            "ec96f02080254f109c51a1f14cdb1931)",
            "https://myvault.vault.azure.net",
            False,
            "db-pass",
            "ec96f02080254f109c51a1f14cdb1931",
        ),
        (
            "@Microsoft.KeyVault(SecretUri=https://127.0.0.1:8443/secrets/x)",
            "https://127.0.0.1:8443",
            False,
            "x",
            None,
        ),
        (
            "@Microsoft.KeyVault(VaultName=myvault;SecretName=api-key)",
            "myvault",
            True,
            "api-key",
            None,
        ),
        (
            " @microsoft.keyvault( VaultName = myvault ; SecretName = api-key ;"
            " SecretVersion = abc123 ) ",
            "myvault",
            True,
            "api-key",
            "abc123",
        ),
    ],
)
def test_both_forms_parse(
    text: str, vault: str, by_name: bool, name: str, version: str | None
) -> None:
    assert is_reference(text)
    ref = parse_reference(text)
    assert (ref.vault, ref.by_name, ref.name, ref.version) == (vault, by_name, name, version)


@pytest.mark.parametrize(
    "text",
    [
        "@Microsoft.KeyVault(SecretUri=http://myvault.vault.azure.net/secrets/x)",
        "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/keys/x)",
        "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/x/v/extra)",
        "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/bad_name)",
        "@Microsoft.KeyVault(VaultName=myvault)",
        "@Microsoft.KeyVault(VaultName=v;SecretName=x)",
        "@Microsoft.KeyVault(VaultName=myvault;SecretName=x;Colour=blue)",
        "@Microsoft.KeyVault(VaultName=myvault;SecretName=x",
        "@Microsoft.KeyVault(nonsense)",
    ],
)
def test_malformed_references_are_configuration_errors(text: str) -> None:
    with pytest.raises(ConfigurationError, match="malformed Key Vault reference"):
        parse_reference(text)


def test_plain_values_are_not_references() -> None:
    assert not is_reference("hunter2")
    assert not is_reference("Microsoft.KeyVault(VaultName=a;SecretName=b)")
    assert not is_reference(42)


def test_vault_name_resolves_in_the_cloud_of_the_primary_vault() -> None:
    assert vault_url_for_name("Other", "https://main.vault.azure.net") == (
        "https://other.vault.azure.net"
    )
    assert vault_url_for_name("other", "https://main.vault.azure.cn/") == (
        "https://other.vault.azure.cn"
    )
    assert vault_url_for_name("other", "https://127.0.0.1:8443") == "https://other.vault.azure.net"
