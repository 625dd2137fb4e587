"""Key Vault references (``@Microsoft.KeyVault(...)``) in other sources' values, resolved on load.

Against one emulator with three vaults; the requests are counted from its request log.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import KeyVaultReferenceError, MissingSettingError

from .conftest import MultiFactory, Vaults

CANARY = "canary-value-4b1d"


class Database(BaseModel):
    host: str = "db"
    password: SecretStr


class Service(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVREF_", env_nested_delimiter="__")

    api_key: SecretStr
    partner_key: SecretStr = SecretStr("none")
    database: Database | None = None


def uri(vault_url: str, name: str, version: str | None = None) -> str:
    tail = f"/{version}" if version else ""
    return f"@Microsoft.KeyVault(SecretUri={vault_url}/secrets/{name}{tail})"


async def test_secret_uri_with_and_without_version(
    vaults: Vaults, make_multi: MultiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    vaults.emu.seed({"api-key": "from-primary"})
    old = vaults.emu.set_secret("partner", "old", "shared")
    vaults.emu.set_secret("partner", "new", "shared")
    vaults.emu.set_secret("db-pass", "pw", "legacy")  # legacy is not even configured as alias
    monkeypatch.setenv("KVREF_PARTNER_KEY", uri(vaults.shared, "partner", old))
    monkeypatch.setenv("KVREF_DATABASE__PASSWORD", uri(vaults.legacy, "db-pass"))
    vault = make_multi(vaults={})
    settings = await vault.load(Service)
    assert settings.api_key.get_secret_value() == "from-primary"
    assert settings.partner_key.get_secret_value() == "old"  # the pinned version
    assert settings.database is not None
    assert settings.database.password.get_secret_value() == "pw"
    assert vaults.gets("shared") == {f"partner/{old}": 1}
    assert vaults.gets("legacy") == {"db-pass": 1}
    # The env wins over the vault for those fields: their own secrets are still read (one GET
    # each, as planned), never listed.
    assert vaults.lists() == 0


async def test_vault_name_form_resolves_an_alias(vaults: Vaults, make_multi: MultiFactory) -> None:
    vaults.emu.seed({"api-key": "a"})
    version = vaults.emu.set_secret("partner", "p1", "shared")
    vaults.emu.set_secret("partner", "p2", "shared")
    settings = await make_multi().load(
        Service,
        partner_key="@Microsoft.KeyVault(VaultName=shared;SecretName=partner)",
        database={
            "password": f"@Microsoft.KeyVault(VaultName=Shared;SecretName=partner;"
            f"SecretVersion={version})"
        },
    )
    assert settings.partner_key.get_secret_value() == "p2"
    assert settings.database is not None
    assert settings.database.password.get_secret_value() == "p1"


async def test_reference_in_dotenv(
    vaults: Vaults, make_multi: MultiFactory, tmp_path: Path
) -> None:
    vaults.emu.set_secret("api", "from-dotenv-ref", "shared")
    env_file = tmp_path / ".env"
    env_file.write_text(f"KVREF_API_KEY={uri(vaults.shared, 'api')}\n")
    settings = await make_multi().load(Service, _env_file=env_file)
    assert settings.api_key.get_secret_value() == "from-dotenv-ref"


async def test_unresolvable_reference_names_field_and_reference(
    vaults: Vaults, make_multi: MultiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    vaults.emu.seed({"api-key": CANARY})
    reference = uri(vaults.shared, "no-such-secret")
    monkeypatch.setenv("KVREF_PARTNER_KEY", reference)
    with pytest.raises(KeyVaultReferenceError) as caught:
        await make_multi().load(Service)
    error = caught.value
    assert isinstance(error, MissingSettingError) is False
    assert error.field == "partner_key"
    assert error.reference == reference
    message = str(error)
    assert "partner_key" in message and reference in message and "does not exist" in message
    assert CANARY not in message and error.__cause__ is None and error.__context__ is None


async def test_disabled_reference_target_is_an_error(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    vaults.emu.seed({"api-key": "a"})
    vaults.emu.set_secret("off", CANARY, "shared", enabled=False)
    with pytest.raises(KeyVaultReferenceError, match="is disabled"):
        await make_multi().load(Service, partner_key=uri(vaults.shared, "off"))


async def test_malformed_reference_fails_before_any_request(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    with pytest.raises(KeyVaultReferenceError, match=r'field "api_key" .init kwargs.: malformed'):
        await make_multi().load(Service, api_key="@Microsoft.KeyVault(SecretName=x)")
    assert vaults.emu.requests == []


async def test_references_can_be_turned_off(vaults: Vaults, make_multi: MultiFactory) -> None:
    literal = uri(vaults.shared, "partner")
    settings = await make_multi(resolve_references=False).load(
        Service, api_key="k", partner_key=literal
    )
    assert settings.partner_key.get_secret_value() == literal
    assert vaults.statuses("shared") == []


async def test_references_are_read_in_the_same_round_as_the_plan(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    """One round: each vault primes once and gets one GET per secret, nothing sequential."""
    vaults.emu.seed({"api-key": "a"})
    vaults.emu.seed({"p": "1"}, "shared")
    vault = make_multi()
    plan = vault.plan(Service)
    found = vault._find_references(Service, {"partner_key": uri(vaults.shared, "p")})
    result = await vault._read(plan, found)
    assert result.rounds == 1
    assert [s for _, s in vaults.statuses("shared")] == [401, 200]
