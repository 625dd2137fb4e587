"""The name plan: field -> secret name mapping, validation and collisions (no server needed)."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings

from kvconfig import (
    ConfigurationError,
    InvalidSecretNameError,
    Secret,
    SecretNameCollisionError,
)
from kvconfig._names import is_valid_secret_name, plan_settings

VERSION = "0123456789abcdef0123456789abcdef"


class Pool(BaseModel):
    size: int = 5


class Database(BaseModel):
    host: str
    password: SecretStr
    pool: Pool = Pool()


class Settings(BaseSettings):
    database: Database
    api_key: SecretStr
    stripe: Annotated[SecretStr, Secret("payments-stripe-key")]
    signing_key: Annotated[SecretStr, Secret(version=VERSION)]
    feature_flags: dict[str, bool] = {}
    log_level: str = "INFO"
    region: str = Field("eu", alias="deployRegion")


def names(cls: type[BaseSettings], prefix: str = "") -> dict[str, str]:
    return {s.field: s.name for s in plan_settings(cls, prefix)}


def test_field_names_map_with_dashes_nesting_alias_and_explicit_names() -> None:
    assert names(Settings) == {
        "database": "database",
        "database.host": "database--host",
        "database.password": "database--password",
        "database.pool": "database--pool",
        "database.pool.size": "database--pool--size",
        "api_key": "api-key",
        "stripe": "payments-stripe-key",
        "signing_key": "signing-key",
        "feature_flags": "feature-flags",
        "log_level": "log-level",
        "region": "deployRegion",
    }


def test_prefix_applies_to_derived_names_but_not_explicit_ones() -> None:
    mapped = names(Settings, "prod-")
    assert mapped["api_key"] == "prod-api-key"
    assert mapped["database.pool.size"] == "prod-database--pool--size"
    assert mapped["stripe"] == "payments-stripe-key"


def test_plan_records_version_required_nested_and_keys() -> None:
    plan = {s.field: s for s in plan_settings(Settings)}
    assert plan["signing_key"].version == VERSION
    assert plan["api_key"].version is None
    assert plan["database"].nested and not plan["api_key"].nested
    assert plan["database.host"].required
    assert not plan["database.pool.size"].required
    assert not plan["log_level"].required
    assert plan["region"].key_path == ("deployRegion",)
    assert plan["stripe"].explicit and not plan["api_key"].explicit


def test_plan_is_cached_per_class_and_prefix() -> None:
    assert plan_settings(Settings) is plan_settings(Settings)
    assert plan_settings(Settings, "a-") is not plan_settings(Settings)


def test_alias_choices_use_first_string_choice() -> None:
    class S(BaseSettings):
        token: str = Field("x", validation_alias=AliasChoices("apiToken", "token"))

    assert names(S) == {"token": "apiToken"}


def test_explicit_name_on_a_model_is_the_base_of_its_fields() -> None:
    class S(BaseSettings):
        db: Annotated[Database, Secret("primary-db")]

    mapped = names(S, "prod-")
    assert mapped["db"] == "primary-db"
    assert mapped["db.host"] == "primary-db--host"


def test_optional_model_is_recursed() -> None:
    class S(BaseSettings):
        database: Database | None = None

    mapped = names(S)
    assert mapped["database.host"] == "database--host"
    assert not {s.field: s for s in plan_settings(S)}["database.host"].required


def test_self_referencing_model_is_not_recursed_forever() -> None:
    class Node(BaseModel):
        value: str = ""
        child: Node | None = None

    class S(BaseSettings):
        node: Node | None = None

    mapped = names(S)
    assert mapped["node.child"] == "node--child"
    assert "node.child.value" not in mapped


def test_invalid_field_derived_name_names_the_field() -> None:
    class S(BaseSettings):
        weird: str = Field("x", alias="has.dot")

    with pytest.raises(InvalidSecretNameError) as info:
        plan_settings(S)
    assert info.value.field == "weird"
    assert info.value.secret_name == "has.dot"
    assert '"weird"' in str(info.value)


def test_invalid_explicit_name_is_reported() -> None:
    class S(BaseSettings):
        key: Annotated[str, Secret("no_underscores")] = "x"

    with pytest.raises(InvalidSecretNameError, match="no_underscores"):
        plan_settings(S)


def test_too_long_name_is_invalid() -> None:
    assert is_valid_secret_name("a" * 127)
    assert not is_valid_secret_name("a" * 128)
    assert not is_valid_secret_name("")
    assert not is_valid_secret_name("é")


def test_collision_names_both_fields() -> None:
    class S(BaseSettings):
        api_key: str = "a"
        other: Annotated[str, Secret("API-KEY")] = "b"

    with pytest.raises(SecretNameCollisionError) as info:
        plan_settings(S)
    assert info.value.fields == ("api_key", "other")
    assert "api_key" in str(info.value) and "other" in str(info.value)


def test_collision_between_nested_and_flat_field() -> None:
    class Inner(BaseModel):
        key: str = ""

    class S(BaseSettings):
        api: Inner = Inner()
        api__key: str = ""

    with pytest.raises(SecretNameCollisionError) as info:
        plan_settings(S)
    assert set(info.value.fields) == {"api.key", "api__key"}


def test_secret_version_must_be_32_hex() -> None:
    with pytest.raises(ConfigurationError, match="32 hexadecimal"):
        Secret(version="v1")
    assert Secret(version=VERSION.upper()).version == VERSION


def test_secrets_for_location_covers_parents_and_children() -> None:
    plan = plan_settings(Settings)
    assert [s.name for s in plan.secrets_for_location(("database", "host"))] == [
        "database",
        "database--host",
    ]
    assert "database--password" in [s.name for s in plan.secrets_for_location(("database",))]
    assert [s.name for s in plan.secrets_for_location(("deployRegion",))] == ["deployRegion"]
