"""pydantic-settings' own Key Vault name rules, as exact names to GET (no listing when possible).

pydantic-settings' ``AzureKeyVaultSettingsSource`` lists the whole vault and looks names up
through ``EnvSettingsSource``'s rules (``env_prefix``, aliases and ``AliasChoices``,
``validate_by_name``, ``case_sensitive``, ``dash_to_underscore``, nested ``--`` keys). The
drop-in source (:mod:`kvconfig._dropin`) keeps those rules by subclassing it; this module only
answers *which secrets can change the result*:

- every name the source looks up for a top-level field (``_extract_field_info``), and
- for a complex field, the nested names ``<name>--<key>`` whose key is a field of the nested
  model(s) (field name, alias, each ``AliasChoices`` head; dashed too with
  ``dash_to_underscore``), recursively.

A superset is harmless (the vault holds every name pydantic-settings would see, so fetching a
few extra ones cannot change the result).

Given the state the higher-priority sources built (``current_state``), names that cannot change
the result are left out. pydantic-settings merges the vault's dict under the earlier state with
``deep_update``: an earlier non-dict value at a key wins whole, an earlier dict keeps the vault's
keys it lacks. So a field is *supplied* when the state holds a value at the key pydantic
validates first (its first alias, or its name) that is not a dict, or a dict holding every field
of every model the field can be (recursively; no dict types, ``extra`` ignored). A supplied field
has none of its names requested; a partly supplied model keeps its JSON secret and the leaves
of its unsupplied fields. Only where the vault's value can land on that same key (or where the
model ignores other keys) is anything left out: with ``validate_by_name`` a vault secret under the
field name lands on a second key, which a model with ``extra="forbid"`` (``BaseSettings``'
default) rejects, and that error is part of pydantic-settings' result.

When the result can depend on names no class can predict, :attr:`CompatPlan.needs_listing` is
set and the caller lists the vault once, for that class only: dicts read entry by entry
(``feature-flags--beta``), nested models that allow or forbid extra keys,
``snake_case_conversion``, ``env_nested_max_split``, and ``case_sensitive`` (Key Vault answers a
GET whatever the case, so only a list tells the exact spelling).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import AliasChoices, AliasPath, BaseModel
from pydantic.fields import FieldInfo

from kvconfig._names import NESTED_DELIMITER, is_valid_secret_name

__all__ = ["CompatPlan", "RulesSource", "compat_plan"]


class RulesSource(Protocol):
    """What :func:`compat_plan` needs from pydantic-settings' ``EnvSettingsSource``."""

    settings_cls: type[Any]

    @property
    def case_sensitive(self) -> bool | None: ...

    env_nested_delimiter: str | None
    env_nested_max_split: int | None

    def _extract_field_info(
        self, field: FieldInfo, field_name: str, model_config: Mapping[str, Any] | None = None
    ) -> list[tuple[str, str, bool]]: ...

    def _field_is_complex(self, field: FieldInfo) -> tuple[bool, bool]: ...

    def _apply_case_sensitive(self, value: str) -> str: ...


@dataclass(frozen=True, slots=True)
class CompatPlan:
    """The secrets a class can read under pydantic-settings' rules.

    Attributes:
        names: Key Vault names to GET (valid names only), in a stable order.
        lookups: The (case-normalised) names the source looks up for top-level fields.
        prefixes: ``<name>--`` of every complex top-level field: nested names start with one.
        needs_listing: Only a list of the vault's names gives pydantic-settings' result.
        reason: Why listing is needed (for the log), or ``""``.
        supplied: Top-level fields left out because the state already supplies them.
    """

    names: tuple[str, ...]
    lookups: frozenset[str]
    prefixes: tuple[str, ...]
    needs_listing: bool
    reason: str = ""
    supplied: tuple[str, ...] = ()


def compat_plan(
    source: RulesSource,
    *,
    dash_to_underscore: bool,
    snake_case_conversion: bool,
    state: Mapping[str, Any] | None = None,
) -> CompatPlan:
    """The names ``source`` (a pydantic-settings Key Vault source) can read for its class.

    ``state`` is what the higher-priority sources gave (pydantic-settings' ``current_state``):
    names that could only feed values it already fixes are left out (see the module docs).
    """
    walker = _Walker(source, dash_to_underscore)
    lookups: set[str] = set()
    prefixes: list[str] = []
    supplied: list[str] = []
    delimiter = source.env_nested_delimiter or NESTED_DELIMITER
    config = source.settings_cls.model_config
    for field_name, field in source.settings_cls.model_fields.items():
        infos = source._extract_field_info(field, field_name)
        given = _given(state, field, field_name, config)
        if given is not _ABSENT and not _lands_on_one_key(infos, field_name, config):
            given = _ABSENT  # a vault value on another key can change the result
        if given is not _ABSENT and _covered(field.annotation, given):
            supplied.append(field_name)
            continue
        sub_state = given if isinstance(given, Mapping) else None
        complex_field = source._field_is_complex(field)[0] or any(c for _, _, c in infos)
        for _, env_name, _ in infos:
            lookups.add(env_name)
            walker.add(env_name)
            if complex_field:
                prefixes.append(env_name + delimiter)
                walker.expand(env_name + delimiter, field.annotation, (), sub_state)
    reason = walker.reason
    if snake_case_conversion:
        reason = "snake_case_conversion maps vault names the class cannot predict"
    elif source.case_sensitive:
        reason = "case_sensitive=True needs the exact spelling of each name"
    elif source.env_nested_max_split:
        reason = "env_nested_max_split keeps delimiters inside keys"
    return CompatPlan(
        names=tuple(walker.names),
        lookups=frozenset(lookups),
        prefixes=tuple(prefixes),
        needs_listing=bool(reason) and bool(lookups),  # nothing left to read: no list either
        reason=reason,
        supplied=tuple(supplied),
    )


_ABSENT: Any = object()


def _lookup_key(field: FieldInfo, field_name: str, config: Mapping[str, Any]) -> str | None:
    """The input key pydantic validates ``field`` from first, or ``None`` (an ``AliasPath``)."""
    alias: Any = field.validation_alias if config.get("validate_by_alias", True) else None
    if alias is None:
        return field_name
    if isinstance(alias, AliasChoices):
        alias = alias.choices[0]
    if isinstance(alias, AliasPath):
        path = alias.path
        return path[0] if len(path) == 1 and isinstance(path[0], str) else None
    return alias if isinstance(alias, str) else None


def _given(
    state: Mapping[str, Any] | None, field: FieldInfo, field_name: str, config: Mapping[str, Any]
) -> Any:
    """What ``state`` holds at the key pydantic reads ``field`` from first, else ``_ABSENT``."""
    if not state:
        return _ABSENT
    key = _lookup_key(field, field_name, config)
    if key is None or key not in state:
        return _ABSENT
    return state[key]


def _ignores_other_keys(config: Mapping[str, Any]) -> bool:
    return config.get("extra") in (None, "ignore")


def _lands_on_one_key(
    infos: list[tuple[str, str, bool]], field_name: str, config: Mapping[str, Any]
) -> bool:
    """Whether the vault's value for a top-level field can only land on its first lookup key.

    pydantic-settings files a found value under the preferred key, except a complex one
    (``AliasPath``) and, with ``validate_by_name``, one found under the field name. A value on
    another key is ignored only when the class ignores extra keys.
    """
    if _ignores_other_keys(config):
        return True
    preferred, _, preferred_complex = infos[0]
    by_name = bool(config.get("validate_by_name") or config.get("populate_by_name"))
    return not any(
        key != preferred
        and (value_is_complex or preferred_complex or (by_name and key == field_name))
        for key, _, value_is_complex in infos
    )


def _covered(annotation: Any, given: Any) -> bool:
    """Whether nothing the vault adds under ``given`` (merged below it) can change the field."""
    if not isinstance(given, Mapping):
        return True  # deep_update keeps an earlier non-dict value whole
    models: list[type[BaseModel]] = []
    dicts: list[Any] = []
    _collect(annotation, models, dicts)
    if dicts or not models:
        return False
    for model in models:
        if not _ignores_other_keys(model.model_config):
            return False
        for name, field in model.model_fields.items():
            sub = _given(given, field, name, model.model_config)
            if sub is _ABSENT or not _covered(field.annotation, sub):
                return False
    return True


class _Walker:
    def __init__(self, source: RulesSource, dash_to_underscore: bool) -> None:
        self._source = source
        self._dash = dash_to_underscore
        self._delimiter = source.env_nested_delimiter or NESTED_DELIMITER
        self._seen: set[str] = set()
        self.names: list[str] = []
        self.reason = ""

    def add(self, name: str) -> None:
        if is_valid_secret_name(name) and name.lower() not in self._seen:
            self._seen.add(name.lower())
            self.names.append(name)

    def _need_listing(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason

    def expand(
        self,
        prefix: str,
        annotation: Any,
        stack: tuple[type[Any], ...],
        state: Mapping[str, Any] | None = None,
    ) -> None:
        """Add the names under ``prefix`` that a value of type ``annotation`` can take keys from.

        ``state`` is the dict the higher-priority sources gave for this value: fields of a model
        that ignores extra keys and that it supplies are left out.
        """
        models: list[type[BaseModel]] = []
        dicts: list[Any] = []
        _collect(annotation, models, dicts)
        if dicts:
            self._need_listing(f"a dict read entry by entry (secrets under {prefix!r})")
        for model in models:
            if model in stack:
                continue  # a recursive model: deeper keys are read as JSON of this level
            extra = model.model_config.get("extra")
            if extra in ("allow", "forbid"):
                self._need_listing(
                    f"{model.__name__} has extra={extra!r}: unknown keys under {prefix!r} matter"
                )
            model_state = state if _ignores_other_keys(model.model_config) else None
            for field_name, field in model.model_fields.items():
                given = _given(model_state, field, field_name, model.model_config)
                if given is not _ABSENT and _covered(field.annotation, given):
                    continue  # supplied: its names may still be added for another field
                sub_state = given if isinstance(given, Mapping) else None
                segments = self._segments(field, field_name, model)
                nested = _has_nested(field.annotation) or self._source._field_is_complex(field)[0]
                for segment in segments:
                    self.add(prefix + segment)
                    if nested:
                        self.expand(
                            prefix + segment + self._delimiter,
                            field.annotation,
                            (*stack, model),
                            sub_state,
                        )

    def _segments(self, field: FieldInfo, field_name: str, model: type[BaseModel]) -> list[str]:
        keys = {field_name}
        for key, _, _ in self._source._extract_field_info(field, field_name, model.model_config):
            keys.add(key)
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                keys.add(alias)
            elif isinstance(alias, AliasChoices):
                for choice in alias.choices:
                    if isinstance(choice, str):
                        keys.add(choice)
                    elif isinstance(choice, AliasPath) and isinstance(choice.path[0], str):
                        keys.add(choice.path[0])
            elif isinstance(alias, AliasPath) and isinstance(alias.path[0], str):
                keys.add(alias.path[0])
        segments: list[str] = []
        for key in sorted(keys):
            for variant in (key, key.replace("_", "-")) if self._dash else (key,):
                segment = self._source._apply_case_sensitive(variant)
                if segment not in segments:
                    segments.append(segment)
        return segments


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    alias_value = getattr(annotation, "__value__", None)  # `type X = ...` aliases
    if alias_value is not None and type(annotation).__name__ == "TypeAliasType":
        return _strip(alias_value)
    return annotation


def _collect(annotation: Any, models: list[type[BaseModel]], dicts: list[Any]) -> None:
    """The models and dicts whose keys nested names of ``annotation`` can fill."""
    annotation = _strip(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        for arg in typing.get_args(annotation):
            _collect(arg, models, dicts)
        return
    target = origin or annotation
    if isinstance(target, type) and issubclass(target, Mapping | dict):
        dicts.append(annotation)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        models.append(annotation)
    elif getattr(annotation, "__pydantic_fields__", None) is not None:
        # a pydantic dataclass: its fields work like a model's, but read them by listing
        dicts.append(annotation)


def _has_nested(annotation: Any) -> bool:
    models: list[type[BaseModel]] = []
    dicts: list[Any] = []
    _collect(annotation, models, dicts)
    return bool(models or dicts)
