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
few extra ones cannot change the result). When the result can depend on names no class can
predict, :attr:`CompatPlan.needs_listing` is set and the caller lists the vault once, for that
class only: dicts read entry by entry (``feature-flags--beta``), nested models that allow or
forbid extra keys, ``snake_case_conversion``, ``env_nested_max_split``, and ``case_sensitive``
(Key Vault answers a GET whatever the case, so only a list tells the exact spelling).
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
    """

    names: tuple[str, ...]
    lookups: frozenset[str]
    prefixes: tuple[str, ...]
    needs_listing: bool
    reason: str = ""


def compat_plan(
    source: RulesSource, *, dash_to_underscore: bool, snake_case_conversion: bool
) -> CompatPlan:
    """The names ``source`` (a pydantic-settings Key Vault source) can read for its class."""
    walker = _Walker(source, dash_to_underscore)
    lookups: set[str] = set()
    prefixes: list[str] = []
    delimiter = source.env_nested_delimiter or NESTED_DELIMITER
    for field_name, field in source.settings_cls.model_fields.items():
        infos = source._extract_field_info(field, field_name)
        complex_field = source._field_is_complex(field)[0] or any(c for _, _, c in infos)
        for _, env_name, _ in infos:
            lookups.add(env_name)
            walker.add(env_name)
            if complex_field:
                prefixes.append(env_name + delimiter)
                walker.expand(env_name + delimiter, field.annotation, ())
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
        needs_listing=bool(reason),
        reason=reason,
    )


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

    def expand(self, prefix: str, annotation: Any, stack: tuple[type[Any], ...]) -> None:
        """Add the names under ``prefix`` that a value of type ``annotation`` can take keys from."""
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
            for field_name, field in model.model_fields.items():
                segments = self._segments(field, field_name, model)
                nested = _has_nested(field.annotation) or self._source._field_is_complex(field)[0]
                for segment in segments:
                    self.add(prefix + segment)
                    if nested:
                        self.expand(
                            prefix + segment + self._delimiter, field.annotation, (*stack, model)
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
