"""Compatibility corpus: each class loads to the same result through pydantic-settings' own
``AzureKeyVaultSettingsSource`` and kvconfig's drop-in, against the same emulator vault."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import AliasChoices, BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig.emulator import KeyVaultEmulator

from .conftest import SourceFactory, with_source


class Level(enum.Enum):
    DEBUG = "debug"
    INFO = "info"


class Database(BaseModel):
    host: str
    port: int = 5432
    max_connections: int = 10


class Redis(BaseModel):
    kind: str = "redis"
    url: str


class Memcached(BaseModel):
    kind: str = "memcached"
    servers: list[str]


class Deep(BaseModel):
    database: Database


class Prefixed(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APP_")
    api_key: str
    token: str = Field("none", alias="svcToken")


class Choices(BaseSettings):
    name: str = Field(validation_alias=AliasChoices("new-name", "old-name"))


class ByName(BaseSettings):
    model_config = SettingsConfigDict(validate_by_name=True)
    token: str = Field(alias="svcToken")


class SnakeNested(BaseModel):
    host: str


class Snake(BaseSettings):
    api_key: str
    db: SnakeNested


class NoneStr(BaseSettings):
    maybe: str | None = "set"
    count: int | None = 1


class Flags(BaseSettings):
    feature_flags: dict[str, bool] = {}


class Plain(BaseSettings):
    api_key: str = "default"


class CaseSensitive(BaseSettings):
    ApiKey: str = "default"
    Other: str = "default"


class Nested(BaseSettings):
    database: Database
    deep: Deep | None = None
    hosts: list[str] = []


class Unions(BaseSettings):
    cache: Redis | Memcached
    extra: dict[str, int] | None = None


class Enums(BaseSettings):
    level: Level = Level.INFO


class Precedence(BaseSettings):
    api_key: str
    region: str = "west"


class Service(BaseModel):
    endpoint: str = Field(validation_alias=AliasChoices("url", "endpoint_url"))
    retry_count: int = 3


class NestedChoices(BaseSettings):
    service: Service | None = None


class InnerSettings(BaseSettings):
    host: str = "inner"


class NestedSettings(BaseSettings):
    inner: InnerSettings = InnerSettings()


class Required(BaseSettings):
    api_key: str
    port: int


class ByNameIgnore(BaseSettings):
    model_config = SettingsConfigDict(validate_by_name=True, extra="ignore")
    token: str = Field(alias="svcToken")


@dataclass
class Case:
    cls: type[BaseSettings]
    secrets: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    lists: bool = False  # the drop-in needs one list pass for this class
    init: dict[str, Any] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # names the drop-in must not request (supplied earlier)


DASH = {"dash_to_underscore": True}

CASES: dict[str, Case] = {
    "env_prefix": Case(Prefixed, {"app-api-key": "k", "svcToken": "t"}, DASH),
    "alias_not_prefixed": Case(Prefixed, {"app-api-key": "k", "app-svcToken": "wrong"}, DASH),
    "alias_choices_old": Case(Choices, {"old-name": "legacy"}, DASH),
    "alias_choices_both": Case(Choices, {"old-name": "legacy", "new-name": "new"}, DASH),
    "validate_by_name": Case(ByName, {"token": "by-name"}, DASH),
    "validate_by_name_alias": Case(ByName, {"svcToken": "a", "token": "b"}, DASH),
    "snake_case": Case(
        Snake, {"ApiKey": "k", "Db--Host": "h"}, {"snake_case_conversion": True}, lists=True
    ),
    "none_str": Case(
        NoneStr, {"maybe": "null", "count": "null"}, {**DASH, "env_parse_none_str": "null"}
    ),
    "none_str_unset": Case(NoneStr, {"maybe": "null"}, DASH),
    "dict_entries": Case(
        Flags, {"feature-flags--beta": "true", "feature-flags--dark": "false"}, DASH, lists=True
    ),
    "dict_json_plus_entries": Case(
        Flags, {"feature-flags": '{"a": true}', "feature-flags--b": "false"}, DASH, lists=True
    ),
    "no_dash_default": Case(Plain, {"api-key": "v"}),
    "dash": Case(Plain, {"api-key": "v"}, DASH),
    "case_variant": Case(Plain, {"API-KEY": "v"}, DASH),
    "case_sensitive_miss": Case(
        CaseSensitive, {"apikey": "x", "Other": "o"}, {"case_sensitive": True}, lists=True
    ),
    "nested_leaves": Case(
        Nested,
        {"database--host": "h", "database--max-connections": "3", "hosts": '["a", "b"]'},
        DASH,
    ),
    "nested_json_and_leaf": Case(
        Nested, {"database": '{"host": "a", "port": 1}', "database--port": "2"}, DASH
    ),
    "nested_deep": Case(
        Nested,
        {"database--host": "h", "deep--database--host": "d", "deep--database--port": "9"},
        DASH,
    ),
    "nested_no_dash": Case(Nested, {"database--host": "h", "database--port": "7"}),
    "union_json": Case(Unions, {"cache": '{"servers": ["m1"]}'}, DASH, lists=True),
    "union_leaves": Case(Unions, {"cache--url": "redis://x", "extra--a": "1"}, DASH, lists=True),
    "enum_name": Case(Enums, {"level": "DEBUG"}, {**DASH, "env_parse_enums": True}),
    "enum_value": Case(Enums, {"level": "debug"}, DASH),
    "env_wins": Case(Precedence, {"api-key": "vault", "region": "east"}, DASH, {"API_KEY": "env"}),
    "prefix_argument": Case(
        Plain, {"svc-api-key": "p", "api-key": "no"}, {**DASH, "env_prefix": "svc_"}
    ),
    "snake_case_prefix": Case(
        Snake,
        {"AppApiKey": "k", "AppDb--Host": "h2", "Db--Host": "h"},
        {"snake_case_conversion": True, "env_prefix": "app_"},
        lists=True,
    ),
    "nested_alias_choices": Case(
        NestedChoices, {"service--endpoint-url": "e", "service--retry-count": "5"}, DASH
    ),
    "nested_settings_extra_forbid": Case(
        NestedSettings, {"inner--host": "h", "inner--unknown": "u"}, DASH, lists=True
    ),
    "missing_required": Case(Required, {"api-key": "k"}, DASH),
    # A higher-priority source supplies the field: same result, fewer requests.
    "env_supplies_field": Case(
        Precedence,
        {"api-key": "vault", "region": "east"},
        DASH,
        {"API_KEY": "env"},
        skipped=("api-key",),
    ),
    "init_supplies_field": Case(
        Precedence, {"api-key": "vault"}, DASH, init={"api_key": "init"}, skipped=("api-key",)
    ),
    "init_none_wins": Case(
        NoneStr, {"maybe": "vault"}, DASH, init={"maybe": None}, skipped=("maybe",)
    ),
    "env_supplies_alias_choice": Case(
        Choices, {"new-name": "vault"}, DASH, {"old-name": "env"}, skipped=("new-name", "old-name")
    ),
    "init_supplies_nested_model": Case(
        Nested,
        {"database": '{"host": "j", "port": 1}', "database--host": "v", "database--port": "2"},
        DASH,
        init={"database": Database(host="init")},
        skipped=("database", "database--host", "database--port", "database--max-connections"),
    ),
    "init_supplies_nested_dict_fully": Case(
        Nested,
        {"database": '{"host": "j", "port": 1}', "database--port": "2"},
        DASH,
        init={"database": {"host": "i", "port": 3, "max_connections": 4}},
        skipped=("database", "database--host", "database--port"),
    ),
    "init_partial_nested_plus_vault_leaf": Case(
        Nested,
        {"database--host": "vault", "database--port": "7"},
        DASH,
        init={"database": {"host": "init"}},
        skipped=("database--host",),
    ),
    "env_partial_nested_plus_vault_leaf": Case(
        Nested,
        {"database": '{"port": 1}', "database--host": "vault", "database--max-connections": "3"},
        DASH,
        {"DATABASE": '{"host": "env", "max_connections": 9}'},
        skipped=("database--host", "database--max-connections"),
    ),
    "init_nested_key_not_the_alias": Case(
        NestedChoices,
        {"service--url": "vault"},
        DASH,
        init={"service": {"endpoint": "init-by-name"}},  # pydantic reads `url` first: not supplied
    ),
    "env_partial_union": Case(
        Unions,
        {"cache--url": "redis://vault", "cache--servers": '["m"]', "extra--a": "1"},
        DASH,
        {"CACHE": '{"url": "redis://env"}'},
        lists=True,
    ),
    "env_supplies_dict_field": Case(
        Flags, {"feature-flags--beta": "true"}, DASH, {"FEATURE_FLAGS": '{"a": true}'}, lists=True
    ),
    "init_supplies_dict_field_as_string": Case(
        Flags, {"feature-flags--beta": "true"}, DASH, init={"feature_flags": "not-a-dict"}
    ),
    # validate_by_name: a vault secret under the field name lands beside the env's alias and
    # BaseSettings' extra="forbid" rejects it; the drop-in must read it to give the same error.
    "by_name_env_alias_vault_name": Case(ByName, {"token": "vault"}, DASH, {"SVCTOKEN": "env"}),
    "by_name_extra_ignore_skips": Case(
        ByNameIgnore, {"token": "vault"}, DASH, {"SVCTOKEN": "env"}, skipped=("token", "svctoken")
    ),
    "invalid_value": Case(Required, {"api-key": "k", "port": "not-a-number"}, DASH),
}


def _result(cls: type[BaseSettings], factory: SourceFactory, init: dict[str, Any]) -> Any:
    try:
        return ("ok", with_source(cls, factory)(**init).model_dump())
    except ValidationError as exc:
        return ("invalid", [(e["type"], e["loc"]) for e in exc.errors()])


def _lists(emu: KeyVaultEmulator) -> int:
    lists = [r for r in emu.requests if r.method == "GET" and r.path.rstrip("/") == "/secrets"]
    return sum(1 for r in lists if r.status != 401)


@pytest.mark.parametrize("name", CASES)
def test_same_result_as_pydantic_settings(
    name: str,
    sync_emulator: KeyVaultEmulator,
    reference: Callable[..., SourceFactory],
    dropin: Callable[..., SourceFactory],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = CASES[name]
    sync_emulator.seed(case.secrets)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    expected = _result(case.cls, reference(**case.options), case.init)
    before = len(sync_emulator.requests)
    actual = _result(case.cls, dropin(**case.options), case.init)
    assert actual == expected
    ours = sync_emulator.requests[before:]
    read = {r.path.strip("/").split("/")[1].lower() for r in ours if r.path.count("/") >= 2}
    assert read.isdisjoint(case.skipped), read & set(case.skipped)
    assert _lists(sync_emulator) - 1 == (1 if case.lists else 0)  # pydantic-settings lists once
    assert len([r for r in ours if r.status != 401]) <= len(case.secrets) + 12 + case.lists * 1


def test_async_credential_gives_the_same_result(
    sync_emulator: KeyVaultEmulator,
    reference: Callable[..., SourceFactory],
    dropin: Callable[..., SourceFactory],
) -> None:
    case = CASES["nested_leaves"]
    sync_emulator.seed(case.secrets)
    assert _result(case.cls, dropin(aio=True, **case.options), {}) == _result(
        case.cls, reference(**case.options), {}
    )
