"""drop_idle_sources drops only sources that cannot contribute (real pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, AliasPath, BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    SettingsConfigDict,
)

from kvconfig._lean_sources import drop_idle_sources


class Inner(BaseModel):
    x: int = 0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_nested_delimiter="__", env_prefix="APP_")
    name: str = "default"
    inner: Inner = Inner()
    items: list[int] = []


def _build(cls: type[BaseSettings], lean: bool, **options: Any) -> BaseSettings:
    sources, kwargs = cls._settings_init_sources(_init_kwargs={}, **options)
    if lean:
        sources = drop_idle_sources(sources)
    return cls(_build_sources=(sources, kwargs))


def _kinds(cls: type[BaseSettings], **options: Any) -> list[str]:
    sources, _ = cls._settings_init_sources(_init_kwargs={}, **options)
    return [type(s).__name__ for s in drop_idle_sources(sources)]


def test_no_env_file_drops_the_dotenv_source() -> None:
    assert "DotEnvSettingsSource" not in _kinds(Settings)


def test_env_source_dropped_unless_a_variable_may_reach_a_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("APP_NAME", "APP_INNER__X", "APP_ITEMS", "NAME", "INNER", "ITEMS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UNRELATED_VARIABLE", "x")
    assert "EnvSettingsSource" not in _kinds(Settings)
    monkeypatch.setenv("app_inner__x", "4")
    assert "EnvSettingsSource" in _kinds(Settings)
    assert _build(Settings, True) == _build(Settings, False)


class Aliased(BaseSettings):
    model_config = SettingsConfigDict(
        env_nested_delimiter="__", env_prefix="SVC_", populate_by_name=True
    )
    plain: str = "d"
    aliased: str = Field("d", alias="OTHER_NAME")
    choices: str = Field("d", validation_alias=AliasChoices("FIRST_CHOICE", "second_choice"))
    path: int = Field(0, validation_alias=AliasPath("DEEP", "n"))
    inner: Inner = Inner()


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SVC_PLAIN": "p"},
        {"svc_plain": "lower"},
        {"OTHER_NAME": "o"},
        {"SVC_OTHER_NAME": "o"},
        {"SECOND_CHOICE": "c"},
        {"FIRST_CHOICE": "c"},
        {"DEEP": '{"n": 7}'},
        {"SVC_INNER__X": "5"},
        {"SVC_INNER": '{"x": 6}'},
    ],
)
def test_aliases_and_nesting_keep_the_env_source_when_needed(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    lean, full = _build(Aliased, True), _build(Aliased, False)
    assert lean == full
    if env:
        assert "EnvSettingsSource" in _kinds(Aliased)


def test_missing_env_file_drops_it_existing_keeps_it(tmp_path: Path) -> None:
    assert "DotEnvSettingsSource" not in _kinds(Settings, _env_file=tmp_path / "nope.env")
    env = tmp_path / ".env"
    env.write_text("APP_NAME=from-dotenv\n")
    assert "DotEnvSettingsSource" in _kinds(Settings, _env_file=env)
    assert _build(Settings, True, _env_file=env) == _build(Settings, False, _env_file=env)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"APP_NAME": "e"},
        {"APP_INNER__X": "3", "APP_ITEMS": "[1,2]"},
        {"app_name": "lower"},
    ],
)
def test_same_settings_with_and_without_dropping(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert _build(Settings, True) == _build(Settings, False)


@pytest.mark.parametrize("filtering", [None, "only_existing", "match_prefix"])
def test_an_empty_source_yields_nothing(filtering: Any) -> None:
    """The premise, checked against the installed pydantic-settings: no variables, no values."""
    source = DotEnvSettingsSource(Settings, env_file=None, dotenv_filtering=filtering)
    assert not source.env_vars
    assert source() == {}
    env = EnvSettingsSource(Settings)
    env.env_vars = {}
    assert env() == {}


def test_subclasses_are_kept() -> None:
    class Custom(DotEnvSettingsSource):
        pass

    source = Custom(Settings, env_file=None)
    assert drop_idle_sources([source]) == (source,)
