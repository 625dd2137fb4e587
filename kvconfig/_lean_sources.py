"""Leave out settings sources that cannot contribute a value, before building a Settings class.

pydantic-settings' ``EnvSettingsSource.__call__`` walks every field of the class (field info,
aliases, nested-delimiter handling, type introspection), whatever the environment holds: ~20 ms
for a class of 1000 fields, paid once to see which secrets the environment already supplies and
again in the build. ``DotEnvSettingsSource`` pays the same walk even when no ``.env`` file is
configured or none exists. Dropping a source that cannot produce a value changes no outcome and
no precedence: the other sources keep their order.

- ``DotEnvSettingsSource``: idle when its mapping (public ``env_vars``, read once at
  construction) is empty. A non-empty one is always kept: with ``extra`` other than
  ``"ignore"`` it reports unknown dotenv entries, which must not be hidden.
- ``EnvSettingsSource``: the process environment is never empty, so it is idle when no variable
  name could be one the class reads. Every name pydantic-settings looks up for a field starts
  with the field's name or one of its aliases (the head of an ``AliasPath``), with or without
  ``env_prefix``; nested ``<name><delimiter>...`` variables share that start. A variable whose
  name (case-folded) does not start with any of these (case-folded) candidates cannot reach a
  field. The candidates over-approximate (a false "may contribute" only costs the walk) and come
  from pydantic's public field information; they are cached per class and prefix.

Only the exact pydantic-settings classes are dropped; a subclass may add values of its own.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence

from pydantic import AliasChoices, AliasPath
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
)

__all__ = ["drop_idle_sources"]


def drop_idle_sources(
    sources: Sequence[PydanticBaseSettingsSource],
) -> tuple[PydanticBaseSettingsSource, ...]:
    """``sources`` without the environment and dotenv sources that cannot give any field a value."""
    return tuple(s for s in sources if not _idle(s))


def _idle(source: PydanticBaseSettingsSource) -> bool:
    kind = type(source)
    if kind is DotEnvSettingsSource:
        assert isinstance(source, DotEnvSettingsSource)
        return not source.env_vars
    if kind is EnvSettingsSource:
        assert isinstance(source, EnvSettingsSource)
        if not source.env_vars:
            return True
        starts = _candidates(source.settings_cls, source.env_prefix or "")
        return not any(_may_match(name, starts) for name in source.env_vars)
    return False


def _may_match(name: str, starts: frozenset[str]) -> bool:
    folded = name.casefold()
    return any(folded[:end] in starts for end in range(1, len(folded) + 1))


_CACHE: weakref.WeakKeyDictionary[type[BaseSettings], dict[str, frozenset[str]]] = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.Lock()


def _candidates(settings_cls: type[BaseSettings], env_prefix: str) -> frozenset[str]:
    """Case-folded starts of every environment variable name a field of the class may read."""
    with _LOCK:
        cached = _CACHE.get(settings_cls, {}).get(env_prefix)
    if cached is not None:
        return cached
    prefix = env_prefix.casefold()
    starts: set[str] = set()
    for field_name, field in settings_cls.model_fields.items():
        for name in _names(field_name, field):
            folded = name.casefold()
            starts.add(folded)
            starts.add(prefix + folded)
    starts.discard("")
    result = frozenset(starts)
    with _LOCK:
        _CACHE.setdefault(settings_cls, {})[env_prefix] = result
    return result


def _names(field_name: str, field: FieldInfo) -> Iterable[str]:
    yield field_name
    if field.alias:
        yield field.alias
    alias = field.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    for choice in choices:
        if isinstance(choice, str):
            yield choice
        elif isinstance(choice, AliasPath) and choice.path and isinstance(choice.path[0], str):
            yield choice.path[0]
