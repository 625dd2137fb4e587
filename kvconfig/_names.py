"""Map a Settings class onto the Key Vault secrets it needs: the *plan*.

Rules, in order of precedence:

1. ``Annotated[..., Secret("explicit-name")]`` wins over everything; the prefix is not applied.
2. Otherwise the name is ``prefix + (alias or field name)`` with ``_`` replaced by ``-``. A
   sequence of prefixes (``("stg-", "")``) gives a chain of names tried in order.
3. Fields of a nested ``BaseModel`` are joined to their parent's name with ``--`` (the
   convention of pydantic-settings' ``AzureKeyVaultSettingsSource``), recursively.
4. Every field also has a secret under its own name. For a complex field (model, dict, list,
   set, tuple) that secret holds the whole value as JSON; leaf secrets of a nested model override
   the keys of that JSON object.

``Secret(vault=...)`` pins a field (and every field below a nested model) to one vault; the
plan records the vault as written (URL or alias): :mod:`kvconfig._routing` resolves it.

Names must match ``^[0-9a-zA-Z-]{1,127}$`` and be unique case-insensitively within a vault (Key
Vault ignores case); otherwise :class:`~kvconfig.InvalidSecretNameError` or
:class:`~kvconfig.SecretNameCollisionError` is raised at load time, before any request. Plans
are cached per (Settings class, prefixes).
"""

from __future__ import annotations

import re
import threading
import types
import typing
import weakref
from collections.abc import Iterator, Sequence
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
    "normalize_prefix",
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
        names: Every name tried, in order (a prefix chain gives several); ``name`` is the
            first.
        vault: The vault the field is pinned to by ``Secret(vault=...)`` (on it or on an
            enclosing model field), as written: a URL or an alias. ``None``: not pinned.
        vaults: The vault URLs tried, in order (filled by :meth:`kvconfig.KeyVault.plan`; empty
            in a plan built without a ``KeyVault``).
    """

    field_path: tuple[str, ...]
    key_path: tuple[str, ...]
    name: str
    version: str | None
    required: bool
    explicit: bool
    nested: bool
    field_info: FieldInfo = field(compare=False, repr=False)
    names: tuple[str, ...] = ()
    vault: str | None = None
    vaults: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.names:
            object.__setattr__(self, "names", (self.name,))

    @property
    def field(self) -> str:
        """The dotted field path, e.g. ``"database.host"``."""
        return ".".join(self.field_path)

    @property
    def candidates(self) -> tuple[tuple[str, str], ...]:
        """``(vault_url, name)`` pairs in the order a load tries them: every name in the first
        vault, then every name in the next (empty until :attr:`vaults` is filled)."""
        return tuple((vault, name) for vault in self.vaults for name in self.names)

    @property
    def slot(self) -> tuple[str, str | None]:
        """The key under which a load hands this field's secret to the settings source.

        For a field read from the default vault under one name it is ``ref.key``, so a plain
        single-vault fetch result can be bound as it is.
        """
        if self.vault is None:
            return self.ref.key
        return (f"{self.vault.lower()} {self.name.lower()}", self.version)

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
    prefixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.prefixes:
            object.__setattr__(self, "prefixes", (self.prefix,))

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
_PLAN_CACHE: weakref.WeakKeyDictionary[type[BaseModel], dict[tuple[str, ...], SettingsPlan]] = (
    weakref.WeakKeyDictionary()
)
_PLAN_LOCK = threading.Lock()


def normalize_prefix(prefix: str | Sequence[str]) -> tuple[str, ...]:
    """``"p-"`` -> ``("p-",)``; a sequence -> a tuple without repeats (order kept)."""
    prefixes = (prefix,) if isinstance(prefix, str) else tuple(dict.fromkeys(prefix))
    return prefixes or ("",)


def plan_settings(settings_cls: type[BaseModel], prefix: str | Sequence[str] = "") -> SettingsPlan:
    """Build (or fetch from cache) the secret plan for ``settings_cls``.

    ``prefix`` may be a sequence: field-derived names are then tried with each, in order.

    Raises:
        InvalidSecretNameError: a field maps to a name Key Vault cannot hold.
        SecretNameCollisionError: two fields map to one secret name (case-insensitively).
    """
    prefixes = normalize_prefix(prefix)
    with _PLAN_LOCK:
        cached = _PLAN_CACHE.get(settings_cls, {}).get(prefixes)
    if cached is not None:
        return cached
    _ensure_complete(settings_cls)
    secrets = tuple(_walk_model(settings_cls, prefixes, (), (), None, True, (settings_cls,)))
    collisions = _collisions(secrets)
    if collisions:
        raise collisions[0]
    plan = SettingsPlan(settings_cls, prefixes[0], secrets, prefixes)
    with _PLAN_LOCK:
        _PLAN_CACHE.setdefault(settings_cls, {})[prefixes] = plan
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
    settings_cls: type[BaseModel], prefix: str | Sequence[str] = ""
) -> tuple[SettingsPlan, tuple[InvalidSecretNameError | SecretNameCollisionError, ...]]:
    """The plan as :func:`plan_settings` builds it, reporting every problem instead of raising.

    For ``kvconfig explain``: the plan holds every field, including those whose names are
    invalid or collide; the problems are the errors :func:`plan_settings` would raise first.
    Not cached.
    """
    prefixes = normalize_prefix(prefix)
    problems: list[InvalidSecretNameError | SecretNameCollisionError] = []
    _ensure_complete(settings_cls)
    secrets = tuple(
        _walk_model(settings_cls, prefixes, (), (), None, True, (settings_cls,), None, problems)
    )
    problems.extend(_collisions(secrets))
    return SettingsPlan(settings_cls, prefixes[0], secrets, prefixes), tuple(problems)


def _walk_model(
    model: type[BaseModel],
    prefixes: tuple[str, ...],
    field_path: tuple[str, ...],
    key_path: tuple[str, ...],
    parent_names: tuple[str, ...] | None,
    parent_required: bool,
    seen: tuple[type[BaseModel], ...],
    parent_vault: str | None = None,
    problems: list[InvalidSecretNameError | SecretNameCollisionError] | None = None,
) -> Iterator[PlannedSecret]:
    """Plan ``model``'s fields depth-first; invalid names raise, or go to ``problems`` if given."""
    for attr, info in model.model_fields.items():
        marker = _secret_marker(info)
        label = _field_label(attr, info)
        names: tuple[str, ...]
        if marker is not None and marker.name is not None:
            names, explicit = (marker.name,), True
        else:
            segment = label.replace("_", "-")
            if parent_names is None:
                names = tuple(dict.fromkeys(p + segment for p in prefixes))
            else:
                names = tuple(dict.fromkeys(p + NESTED_DELIMITER + segment for p in parent_names))
            explicit = False
        vault = marker.vault if marker is not None and marker.vault is not None else parent_vault
        name = next((n for n in names if not is_valid_secret_name(n)), names[0])
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
            name=names[0],
            version=marker.version if marker is not None else None,
            required=required,
            explicit=explicit,
            nested=nested,
            field_info=info,
            names=names,
            vault=vault,
        )
        if nested and sub_model is not None:
            yield from _walk_model(
                sub_model,
                prefixes,
                path,
                keys,
                names,
                required,
                (*seen, sub_model),
                vault,
                problems,
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
    """One error per field whose name an earlier field already uses (case-insensitively) in the
    same vault (fields pinned to different vaults may share a name)."""
    found: list[SecretNameCollisionError] = []
    by_name: dict[tuple[str, str], PlannedSecret] = {}
    for secret in secrets:
        other = by_name.setdefault(((secret.vault or "").lower(), secret.name.lower()), secret)
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
