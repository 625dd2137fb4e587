"""Map a Settings class onto the Key Vault secrets it needs: the *plan*.

Rules, in order of precedence:

1. ``Annotated[..., Secret("explicit-name")]`` wins over everything; the prefix is not applied.
2. Otherwise the name is ``prefix + (alias or field name)`` with ``_`` replaced by ``-``.
3. Fields of a nested ``BaseModel`` are joined to their parent's name with ``--`` (the
   convention of pydantic-settings' ``AzureKeyVaultSettingsSource``), recursively.
4. Every field also has a secret under its own name. For a complex field (model, dict, list,
   set, tuple) that secret holds the whole value as JSON; leaf secrets of a nested model override
   the keys of that JSON object.

Names must match ``^[0-9a-zA-Z-]{1,127}$`` and be unique case-insensitively (Key Vault ignores
case); otherwise :class:`~kvconfig.InvalidSecretNameError` or
:class:`~kvconfig.SecretNameCollisionError` is raised at load time, before any request. Plans
are cached per (Settings class, prefix).
"""

from __future__ import annotations

import re
import threading
import types
import typing
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import AliasChoices, BaseModel, RootModel
from pydantic.fields import FieldInfo

from kvconfig._errors import ConfigurationError, InvalidSecretNameError, SecretNameCollisionError
from kvconfig._secret import Secret

__all__ = [
    "NESTED_DELIMITER",
    "PlannedSecret",
    "SecretRef",
    "SettingsPlan",
    "is_valid_secret_name",
    "plan_settings",
    "plan_with_problems",
]

NESTED_DELIMITER = "--"
_NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")


def is_valid_secret_name(name: str) -> bool:
    """Whether Key Vault can hold a secret called ``name`` (``^[0-9a-zA-Z-]{1,127}$``)."""
    # fullmatch: with match(), `$` also matches before a trailing newline ("name\n").
    return _NAME_RE.fullmatch(name) is not None


class SecretRef(NamedTuple):
    """One secret to fetch: its name and optionally a pinned version (``None`` = latest)."""

    name: str
    version: str | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        """Case-insensitive identity of the secret within one vault."""
        return (self.name.lower(), self.version)


@dataclass(frozen=True, slots=True)
class PlannedSecret:
    """One field of the Settings class (at any depth) and the secret that can provide it.

    Attributes:
        field_path: Attribute names from the Settings class down, e.g. ``("database", "host")``.
        key_path: The keys under which the value is handed to pydantic (aliases respected).
        name: The secret name requested from the vault.
        version: Pinned version, or ``None`` for the latest.
        required: Every field on the path is required (no default anywhere).
        explicit: The name came from ``Secret("...")``.
        nested: The field is a model whose own fields are planned too; its secret, if present,
            holds the whole model as a JSON object.
        field_info: pydantic's ``FieldInfo`` for decoding (not compared, not shown).
    """

    field_path: tuple[str, ...]
    key_path: tuple[str, ...]
    name: str
    version: str | None
    required: bool
    explicit: bool
    nested: bool
    field_info: FieldInfo = field(compare=False, repr=False)

    @property
    def field(self) -> str:
        """The dotted field path, e.g. ``"database.host"``."""
        return ".".join(self.field_path)

    @property
    def ref(self) -> SecretRef:
        """The secret to fetch for this field."""
        return SecretRef(self.name, self.version)


@dataclass(frozen=True, slots=True)
class SettingsPlan:
    """Everything kvconfig will request for one Settings class: ``kvconfig explain`` prints it.

    ``secrets`` is in depth-first order: a nested model's entry comes before its fields'.
    """

    settings_cls: type[BaseModel]
    prefix: str
    secrets: tuple[PlannedSecret, ...]

    @property
    def refs(self) -> tuple[SecretRef, ...]:
        """The secrets to fetch, in plan order, one per field."""
        return tuple(s.ref for s in self.secrets)

    def secrets_for_location(self, loc: tuple[str | int, ...]) -> tuple[PlannedSecret, ...]:
        """The planned secrets that could have provided the value at a pydantic error ``loc``.

        That is the field itself, its descendants (when it is a model) and its ancestors'
        whole-JSON secrets.
        """
        keys = tuple(str(part) for part in loc)
        found: list[PlannedSecret] = []
        for secret in self.secrets:
            paths = (secret.key_path, secret.field_path)
            n = len(keys)
            if any(p[:n] == keys for p in paths) or any(
                len(p) < n and keys[: len(p)] == p for p in paths
            ):
                found.append(secret)
        return tuple(found)

    def __iter__(self) -> Iterator[PlannedSecret]:
        return iter(self.secrets)

    def __len__(self) -> int:
        return len(self.secrets)


# Plans are pure functions of (class, prefix); classes are usually module-level, so a weak
# cache keyed by the class avoids recomputing them on every load (and refresh) without pinning
# dynamically created classes in memory.
_PLAN_CACHE: weakref.WeakKeyDictionary[type[BaseModel], dict[str, SettingsPlan]] = (
    weakref.WeakKeyDictionary()
)
_PLAN_LOCK = threading.Lock()


def plan_settings(settings_cls: type[BaseModel], prefix: str = "") -> SettingsPlan:
    """Build (or fetch from cache) the secret plan for ``settings_cls``.

    Raises:
        InvalidSecretNameError: a field maps to a name Key Vault cannot hold.
        SecretNameCollisionError: two fields map to one secret name (case-insensitively).
    """
    with _PLAN_LOCK:
        cached = _PLAN_CACHE.get(settings_cls, {}).get(prefix)
    if cached is not None:
        return cached
    _ensure_complete(settings_cls)
    secrets = tuple(_walk_model(settings_cls, prefix, (), (), None, True, (settings_cls,)))
    collisions = _collisions(secrets)
    if collisions:
        raise collisions[0]
    plan = SettingsPlan(settings_cls=settings_cls, prefix=prefix, secrets=secrets)
    with _PLAN_LOCK:
        _PLAN_CACHE.setdefault(settings_cls, {})[prefix] = plan
    return plan


def _ensure_complete(model: type[BaseModel]) -> None:
    """Resolve forward references (``from __future__ import annotations``, a nested model
    defined later) before planning: an unresolved ``database: Database`` would be planned as
    one JSON secret. Still incomplete: :class:`~kvconfig.ConfigurationError`, and no plan is
    cached."""
    if getattr(model, "__pydantic_complete__", True):
        return
    model.model_rebuild(raise_errors=False)
    if not getattr(model, "__pydantic_complete__", True):
        raise ConfigurationError(
            f"{model.__name__} is not fully defined (a forward reference to a class that does "
            f"not exist yet?); define every referenced model, then call "
            f"{model.__name__}.model_rebuild()"
        )


def plan_with_problems(
    settings_cls: type[BaseModel], prefix: str = ""
) -> tuple[SettingsPlan, tuple[InvalidSecretNameError | SecretNameCollisionError, ...]]:
    """The plan as :func:`plan_settings` builds it, reporting every problem instead of raising.

    For ``kvconfig explain``: the plan holds every field, including those whose names are
    invalid or collide; the problems are the errors :func:`plan_settings` would raise first.
    Not cached.
    """
    problems: list[InvalidSecretNameError | SecretNameCollisionError] = []
    _ensure_complete(settings_cls)
    secrets = tuple(
        _walk_model(settings_cls, prefix, (), (), None, True, (settings_cls,), problems)
    )
    problems.extend(_collisions(secrets))
    return SettingsPlan(settings_cls=settings_cls, prefix=prefix, secrets=secrets), tuple(problems)


def _walk_model(
    model: type[BaseModel],
    prefix: str,
    field_path: tuple[str, ...],
    key_path: tuple[str, ...],
    parent_name: str | None,
    parent_required: bool,
    seen: tuple[type[BaseModel], ...],
    problems: list[InvalidSecretNameError | SecretNameCollisionError] | None = None,
) -> Iterator[PlannedSecret]:
    """Plan ``model``'s fields depth-first; invalid names raise, or go to ``problems`` if given."""
    for attr, info in model.model_fields.items():
        marker = _secret_marker(info)
        label = _field_label(attr, info)
        if marker is not None and marker.name is not None:
            name, explicit = marker.name, True
        else:
            segment = label.replace("_", "-")
            if parent_name is None:
                name = prefix + segment
            else:
                name = parent_name + NESTED_DELIMITER + segment
            explicit = False
        path = (*field_path, attr)
        if not is_valid_secret_name(name):
            dotted = ".".join(path)
            hint = "" if explicit else '; name it explicitly with Annotated[..., Secret("name")]'
            error = InvalidSecretNameError(
                f'field "{dotted}" of {seen[0].__name__} maps to secret name {name!r}, which Key '
                f"Vault cannot hold (names must match ^[0-9a-zA-Z-]{{1,127}}$){hint}",
                field=dotted,
                secret_name=name,
            )
            if problems is None:
                raise error
            problems.append(error)
        required = parent_required and info.is_required()
        sub_model = _nested_model(info.annotation)
        nested = sub_model is not None and sub_model not in seen
        keys = (*key_path, label)
        yield PlannedSecret(
            field_path=path,
            key_path=keys,
            name=name,
            version=marker.version if marker is not None else None,
            required=required,
            explicit=explicit,
            nested=nested,
            field_info=info,
        )
        if nested and sub_model is not None:
            yield from _walk_model(
                sub_model, prefix, path, keys, name, required, (*seen, sub_model), problems
            )


def _secret_marker(info: FieldInfo) -> Secret | None:
    markers = [m for m in info.metadata if isinstance(m, Secret)]
    return markers[-1] if markers else None


def _field_label(attr: str, info: FieldInfo) -> str:
    """The field's alias if it has one, else its name.

    It is both the base of the secret name and the key pydantic validates the field by
    (aliases are validated by default).
    """
    alias = _string_alias(info)
    return alias if alias is not None else attr


def _string_alias(info: FieldInfo) -> str | None:
    alias = info.validation_alias
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        for choice in alias.choices:
            if isinstance(choice, str):
                return choice
    # An AliasPath points into a structure, not at a name: fall back to `alias`/the field name.
    return info.alias if isinstance(info.alias, str) else None


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model class a field holds (``Model`` or ``Model | None``), else ``None``."""
    annotation = _strip_annotated(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        members = [_strip_annotated(a) for a in typing.get_args(annotation) if a is not type(None)]
        models = [m for m in members if _is_plain_model(m)]
        return models[0] if len(models) == 1 else None
    return annotation if _is_plain_model(annotation) else None


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_plain_model(annotation: Any) -> bool:
    return (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and not issubclass(annotation, RootModel)
    )


def _collisions(secrets: tuple[PlannedSecret, ...]) -> list[SecretNameCollisionError]:
    """One error per field whose name an earlier field already uses (case-insensitively)."""
    found: list[SecretNameCollisionError] = []
    by_name: dict[str, PlannedSecret] = {}
    for secret in secrets:
        other = by_name.setdefault(secret.name.lower(), secret)
        if other is not secret:
            found.append(
                SecretNameCollisionError(
                    f'fields "{other.field}" and "{secret.field}" both map to secret '
                    f"{secret.name!r} (Key Vault names are case-insensitive); give one of them "
                    'an explicit name with Annotated[..., Secret("name")]',
                    fields=(other.field, secret.field),
                    secret_name=secret.name,
                )
            )
    return found
