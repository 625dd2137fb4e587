"""KeyVault.load against the emulator: mapping, precedence, missing, disabled, errors."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from kvconfig import (
    InvalidSecretNameError,
    KeyVaultSettingsSource,
    MissingSettingError,
    Secret,
    SecretNameCollisionError,
    SettingsValidationError,
)
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory

from .conftest import secret_gets

SENTINEL = "sup3r-s3cret-VALUE"


class Database(BaseModel):
    host: str
    password: SecretStr
    port: int = 5432


class Plain(BaseSettings):
    api_key: SecretStr
    log_level: str = "INFO"


class Nested(BaseSettings):
    database: Database


async def test_plain_field(keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory) -> None:
    keyvault_emulator.seed({"api-key": "k-1"})
    settings = await make_vault().load(Plain)
    assert settings.api_key.get_secret_value() == "k-1"
    assert settings.log_level == "INFO"


async def test_nested_fields(keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory) -> None:
    keyvault_emulator.seed(
        {"database--host": "db", "database--password": "pw", "database--port": "1"}
    )
    settings = await make_vault().load(Nested)
    assert settings.database.host == "db"
    assert settings.database.password.get_secret_value() == "pw"
    assert settings.database.port == 1


async def test_alias_is_the_secret_name_and_key(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    class S(BaseSettings):
        region: str = Field(alias="deployRegion")

    keyvault_emulator.seed({"deployregion": "westeurope"})  # lookup is case-insensitive
    assert (await make_vault().load(S)).region == "westeurope"


async def test_prefix(keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory) -> None:
    keyvault_emulator.seed({"prod-api-key": "prod", "api-key": "unprefixed"})
    settings = await make_vault(prefix="prod-").load(Plain)
    assert settings.api_key.get_secret_value() == "prod"
    assert "api-key" not in secret_gets(keyvault_emulator)


async def test_explicit_name_ignores_prefix(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    class S(BaseSettings):
        stripe: Annotated[SecretStr, Secret("payments-stripe-key")]

    keyvault_emulator.seed({"payments-stripe-key": "sk"})
    settings = await make_vault(prefix="prod-").load(S)
    assert settings.stripe.get_secret_value() == "sk"


async def test_pinned_version(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    old = keyvault_emulator.set_secret("signing-key", "old")
    keyvault_emulator.set_secret("signing-key", "new")

    class S(BaseSettings):
        signing_key: Annotated[SecretStr, Secret(version=old)]

    class Latest(BaseSettings):
        signing_key: SecretStr

    vault = make_vault()
    assert (await vault.load(S)).signing_key.get_secret_value() == "old"
    assert (await vault.load(Latest)).signing_key.get_secret_value() == "new"
    assert any(r.path.rstrip("/").endswith(old) for r in keyvault_emulator.requests)


async def test_json_dict_and_list(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    class S(BaseSettings):
        feature_flags: dict[str, bool] = {}
        hosts: list[str] = []

    keyvault_emulator.seed(
        {"feature-flags": '{"beta": true, "dark": false}', "hosts": '["a", "b"]'}
    )
    settings = await make_vault().load(S)
    assert settings.feature_flags == {"beta": True, "dark": False}
    assert settings.hosts == ["a", "b"]


async def test_json_model_with_leaf_override(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed(
        {"database": '{"host": "from-json", "password": "pw", "port": 1}', "database--host": "leaf"}
    )
    settings = await make_vault().load(Nested)
    assert settings.database.host == "leaf"
    assert settings.database.port == 1
    assert settings.database.password.get_secret_value() == "pw"


async def test_env_overrides_vault(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyvault_emulator.seed({"api-key": "vault", "log-level": "DEBUG"})
    monkeypatch.setenv("API_KEY", "env")
    settings = await make_vault().load(Plain)
    assert settings.api_key.get_secret_value() == "env"
    assert settings.log_level == "DEBUG"  # vault beats the default


async def test_init_kwargs_override_everything(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyvault_emulator.seed({"api-key": "vault"})
    monkeypatch.setenv("API_KEY", "env")
    settings = await make_vault().load(Plain, api_key="init")
    assert settings.api_key.get_secret_value() == "init"


async def test_optional_missing_uses_default(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    class S(BaseSettings):
        timeout: int = 30
        name: str | None = None

    settings = await make_vault().load(S)
    assert settings.timeout == 30 and settings.name is None
    assert secret_gets(keyvault_emulator) == {"timeout": 1, "name": 1}


async def test_required_missing_names_field_secrets_and_vault(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed({"app-database--host": "db"})
    with pytest.raises(MissingSettingError) as info:
        await make_vault(prefix="app-").load(Nested)
    message = str(info.value)
    assert "database.password" in message
    assert "'app-database--password'" in message and "'app-database'" in message
    assert "'app-database--host'" not in message
    assert keyvault_emulator.vault_url in message
    assert info.value.errors[0]["loc"] == ("database", "password")
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_disabled_secret_warns_and_falls_back(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, caplog: pytest.LogCaptureFixture
) -> None:
    keyvault_emulator.seed({"api-key": "k", "log-level": "DEBUG"})
    keyvault_emulator.update_secret("log-level", enabled=False)
    with caplog.at_level(logging.WARNING, logger="kvconfig"):
        settings = await make_vault().load(Plain)
    assert settings.log_level == "INFO"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "log-level" in warnings[0].getMessage() and "disabled" in warnings[0].getMessage()


async def test_expired_secret_is_used_with_a_warning(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, caplog: pytest.LogCaptureFixture
) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    keyvault_emulator.set_secret("api-key", SENTINEL, expires_on=past)
    with caplog.at_level(logging.DEBUG, logger="kvconfig"):
        settings = await make_vault().load(Plain)
    assert settings.api_key.get_secret_value() == SENTINEL
    assert any("expired" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert all(SENTINEL not in r.getMessage() for r in caplog.records)
    assert any(r.levelno == logging.INFO and "1 found" in r.getMessage() for r in caplog.records)


async def test_validation_error_never_shows_the_value(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    class S(BaseSettings):
        port: int

    keyvault_emulator.seed({"port": SENTINEL})
    with pytest.raises(SettingsValidationError) as info:
        await make_vault().load(S)
    assert not isinstance(info.value, MissingSettingError)
    assert "port" in str(info.value)
    assert SENTINEL not in str(info.value) and SENTINEL not in repr(info.value)
    assert SENTINEL not in repr(info.value.errors)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_invalid_json_never_shows_the_value(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    class S(BaseSettings):
        flags: dict[str, bool] = {}

    keyvault_emulator.seed({"flags": SENTINEL})
    with pytest.raises(SettingsValidationError) as info:
        await make_vault().load(S)
    assert "'flags'" in str(info.value) and "JSON" in str(info.value)
    assert SENTINEL not in str(info.value) and SENTINEL not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_fetched_values_stay_out_of_reprs(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed({"api-key": SENTINEL})
    vault = make_vault()
    settings = await vault.load(Plain)
    result = await vault._open().fetch(vault.plan(Plain).refs)
    assert SENTINEL not in repr(settings)
    assert SENTINEL not in repr(result) and SENTINEL not in repr(vault)
    assert repr(vault) == f"KeyVault({keyvault_emulator.vault_url!r})"


async def test_user_positioned_source_is_filled(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    class VaultFirst(BaseSettings):
        api_key: str

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (KeyVaultSettingsSource(settings_cls), init_settings, env_settings)

    keyvault_emulator.seed({"api-key": "vault"})
    monkeypatch.setenv("API_KEY", "env")
    assert (await make_vault().load(VaultFirst)).api_key == "vault"
    # Constructed without load() the source does no I/O and provides nothing.
    assert VaultFirst().api_key == "env"


async def test_dotenv_beats_vault(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, tmp_path: Any
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("API_KEY=dotenv\n")

    class S(BaseSettings, env_file=str(env_file)):
        api_key: str
        log_level: str = "INFO"

    keyvault_emulator.seed({"api-key": "vault", "log-level": "WARN"})
    settings = await make_vault().load(S)
    assert settings.api_key == "dotenv" and settings.log_level == "WARN"


async def test_source_options_pass_through(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, tmp_path: Any
) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("API_KEY=from-custom-env\n")
    keyvault_emulator.seed({"api-key": "vault"})
    settings = await make_vault().load(Plain, _env_file=str(env_file))
    assert settings.api_key.get_secret_value() == "from-custom-env"


async def test_invalid_name_raises_before_any_request(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    class S(BaseSettings):
        dotted: str = Field("x", alias="a.b")

    with pytest.raises(InvalidSecretNameError, match='"dotted"'):
        await make_vault().load(S)
    assert keyvault_emulator.requests == []


async def test_collision_raises_before_any_request(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    class S(BaseSettings):
        api_key: str = "a"
        key2: Annotated[str, Secret("Api-Key")] = "b"

    with pytest.raises(SecretNameCollisionError, match="api_key"):
        await make_vault().load(S)
    assert keyvault_emulator.requests == []


async def test_the_issue_example_class(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    version = keyvault_emulator.set_secret("signing-key", "sig-old")
    keyvault_emulator.set_secret("signing-key", "sig-new")
    keyvault_emulator.seed(
        {
            "database--host": "db",
            "database--password": "pw",
            "api-key": "ak",
            "payments-stripe-key": "sk",
            "feature-flags": '{"x": true}',
        }
    )

    class Settings(BaseSettings):
        database: Database
        api_key: SecretStr
        stripe: Annotated[SecretStr, Secret("payments-stripe-key")]
        signing_key: Annotated[SecretStr, Secret(version=version)]
        feature_flags: dict[str, bool] = {}
        log_level: str = "INFO"

    vault = make_vault()
    settings = await vault.load(Settings)
    assert settings.signing_key.get_secret_value() == "sig-old"
    assert settings.stripe.get_secret_value() == "sk"
    assert settings.feature_flags == {"x": True}
    assert settings.log_level == "INFO"
    assert len([r for r in keyvault_emulator.requests if r.status == 401]) == 1
    assert len(vault.plan(Settings)) == 9
    assert len(keyvault_emulator.requests) == 1 + 9  # challenge + one GET per planned secret


async def test_nested_alias_and_env_nested_override(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Cache(BaseModel):
        url: str = Field(alias="redisUrl")
        ttl: int = 60

    class S(BaseSettings, env_nested_delimiter="__"):
        cache: Cache

    keyvault_emulator.seed({"cache--redisUrl": "redis://vault", "cache--ttl": "5"})
    monkeypatch.setenv("CACHE__TTL", "7")
    settings = await make_vault().load(S)
    assert settings.cache.url == "redis://vault"
    assert settings.cache.ttl == 7  # env beats the vault, key by key
