"""The one way a Settings instance is built from fetched secrets (load, watch, refresh).

pydantic-settings' precedence (init kwargs, environment, dotenv, then the vault, then file
secrets and defaults), kvconfig's errors, and validation messages that never show a value. No
I/O. Also the INFO/WARNING lines a load logs.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SecretsSettingsSource
from pydantic_settings.exceptions import SettingsError
from pydantic_settings.sources import DefaultSettingsSource

from kvconfig._errors import MissingSettingError, SettingsValidationError
from kvconfig._lean_sources import drop_idle_sources
from kvconfig._model import FetchedSecret, SecretStatus
from kvconfig._names import PlannedSecret, SettingsPlan
from kvconfig._redact import safe_errors
from kvconfig._references import substitute_in_sources
from kvconfig._routing import ReadResult
from kvconfig._source import KeyVaultSettingsSource

__all__ = [
    "build_settings",
    "insert_source",
    "log_load",
    "needed_plan",
    "source_list",
    "source_options",
]

logger = logging.getLogger("kvconfig")

SettingsT = TypeVar("SettingsT", bound=BaseSettings)
Key = tuple[str, str | None]


@functools.cache
def source_options() -> frozenset[str]:
    """The underscore options of ``BaseSettings.__init__`` that configure the built-in sources.

    Read from pydantic-settings' ``__init__`` signature on first use, never at import time, so
    a change there cannot break ``import kvconfig``.
    """
    return frozenset(
        name
        for name in inspect.signature(BaseSettings.__init__).parameters
        if name.startswith("_")
        and name not in ("_init_kwargs", "_build_sources", "__pydantic_self__")
    )


def source_list(
    settings_cls: type[BaseSettings], init_kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """pydantic-settings' sources for ``settings_cls`` as ``Settings(**init_kwargs)`` builds them
    (the one place its private ``_settings_init_sources`` is called), less the idle ones."""
    values = dict(init_kwargs)
    # `_env_file=`, `_secrets_dir=`, ... configure the sources, as in `Settings(...)`.
    options = {k: values.pop(k) for k in list(values) if k in source_options()}
    sources, kwargs = settings_cls._settings_init_sources(_init_kwargs=values, **options)
    # Idle env/dotenv sources would walk every field for nothing, in needed_plan() and in the
    # build; dropping them changes no value and no precedence (kvconfig._lean_sources).
    return drop_idle_sources(sources), kwargs


def needed_plan(
    settings_cls: type[BaseSettings], plan: SettingsPlan, init_kwargs: dict[str, Any]
) -> SettingsPlan:
    """``plan`` without the secrets whose field a higher-priority source already supplies.

    The sources ahead of the vault's (init kwargs, environment, dotenv by default; whatever
    ``settings_customise_sources`` puts first) are read once; a planned secret is dropped when
    they give a value at its location. A nested model's JSON secret is kept unless they give
    the model as a whole (a dict from them is merged with the vault's keys, so it still counts).
    No request is made for a dropped secret, so a 403 on it cannot fail the load.
    """
    try:
        sources, _ = source_list(settings_cls, init_kwargs)
    except Exception:
        return plan
    ahead: list[dict[str, Any]] = []
    for source in sources:
        if isinstance(source, KeyVaultSettingsSource):
            break
        if isinstance(source, SecretsSettingsSource | DefaultSettingsSource):
            break  # where the vault's source goes when the class does not place it
        try:
            data = source()
        except Exception:
            continue
        if isinstance(data, dict):
            ahead.append(data)
    if not ahead:
        return plan
    kept = tuple(p for p in plan.secrets if not any(_supplies(d, p) for d in ahead))
    if len(kept) == len(plan.secrets):
        return plan
    return dataclasses.replace(plan, secrets=kept)


def _supplies(data: dict[str, Any], planned: PlannedSecret) -> bool:
    node: Any = data
    for key in planned.key_path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    if node is None:
        return False
    return not (planned.nested and isinstance(node, dict))


def build_settings(
    settings_cls: type[SettingsT],
    plan: SettingsPlan,
    secrets: Mapping[Key, FetchedSecret],
    init_kwargs: dict[str, Any],
    *,
    vault_url: str,
    references: Mapping[str, str] | None = None,
) -> SettingsT:
    """Validate ``settings_cls`` from its usual sources plus the fetched ``secrets`` (keyed by
    ``PlannedSecret.slot``); ``references`` (reference text -> value) replace Key Vault
    references in the other sources' values."""
    error: SettingsValidationError
    try:
        sources, kwargs = source_list(settings_cls, init_kwargs)
        if references:
            substitute_in_sources(sources, references)
        ours = [s for s in sources if isinstance(s, KeyVaultSettingsSource)]
        if ours:
            for source in ours:
                source._bind(plan, secrets)
        else:
            source = KeyVaultSettingsSource(settings_cls)
            source._bind(plan, secrets)
            sources = insert_source(sources, source)
        return settings_cls(_build_sources=(sources, kwargs))
    except ValidationError as exc:
        error = _validation_error(settings_cls, plan, secrets, exc, vault_url)
    except SettingsError as exc:
        # pydantic-settings' own parse errors name the field and source, never the value.
        error = SettingsValidationError(str(exc))
    # Raised outside the except blocks: `from None` only hides the original from tracebacks,
    # and as __context__ it would still hold pydantic's error, which quotes the input.
    raise error from None


def _validation_error(
    settings_cls: type[BaseSettings],
    plan: SettingsPlan,
    secrets: Mapping[tuple[str, str | None], FetchedSecret],
    exc: ValidationError,
    vault_url: str,
) -> SettingsValidationError:
    # Locations below a declared field are masked: dict keys come from the value.
    errors = safe_errors(exc, settings_cls)
    lines: list[str] = []
    missing_only = True
    for error in errors:
        loc = tuple(error["loc"])
        where = ".".join(str(part) for part in loc) or settings_cls.__name__
        if error["type"] == "missing":
            candidates = plan.secrets_for_location(loc)
            present = [s for s in candidates if _found_in(secrets, s.slot)]
            absent = [s for s in candidates if s not in present]
            tried = _tried(absent, vault_url)
            if present:
                tried += "; secret(s) " + ", ".join(repr(s.name) for s in present)
                tried += " exist but do not set it"
            lines.append(
                f"{where}: required, but no init argument, environment variable or dotenv "
                f"entry set it, and {tried}"
            )
        else:
            missing_only = False
            lines.append(f"{where}: {error['msg']}")
    cls = MissingSettingError if missing_only else SettingsValidationError
    count = len(errors)
    message = (
        f"{count} error{'s' if count != 1 else ''} loading {settings_cls.__name__} from "
        f"{vault_url}:\n  " + "\n  ".join(lines)
    )
    return cls(message, errors=[dict(e) for e in errors])


def log_load(
    settings_cls: type[BaseSettings],
    plan: SettingsPlan,
    result: ReadResult,
    started: float,
    *,
    vault_url: str,
) -> None:
    counts = dict.fromkeys(SecretStatus, 0)
    fields_by_key: dict[tuple[str, str, str | None], list[str]] = {}
    for planned, resolution in zip(plan.secrets, result.resolutions, strict=False):
        fields_by_key.setdefault(resolution.candidate.key, []).append(planned.field)
    for candidate, secret in result.observed.items():
        counts[secret.status] += 1
        url = candidate.vault_url
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "secret %s in %s version %s: %s",
                secret.name,
                url,
                secret.version,
                secret.status.value,
            )
        fields = ", ".join(fields_by_key.get(candidate.key, ()))
        if not fields:
            continue  # a 404 that a later candidate made up for, or a reference
        if secret.status is SecretStatus.DISABLED:
            logger.warning(
                "secret %s in %s is disabled; treated as missing (field %s)",
                secret.name,
                url,
                fields,
            )
        elif secret.found and secret.is_expired():
            logger.warning(
                "secret %s in %s expired on %s; Key Vault still serves it (field %s)",
                secret.name,
                url,
                secret.expires_on,
                fields,
            )
        elif secret.found and secret.is_not_yet_valid():
            logger.warning(
                "secret %s in %s is not valid before %s; Key Vault serves it anyway (field %s)",
                secret.name,
                url,
                secret.not_before,
                fields,
            )
    vaults = dict.fromkeys(c.vault_url for c in result.observed) or {vault_url: None}
    logger.info(
        "loaded %s from %s: %d secrets requested, %d found, %d missing, %d disabled, "
        "%d requests, %.1f ms",
        settings_cls.__name__,
        ", ".join(vaults),
        len(result.observed),
        counts[SecretStatus.FOUND],
        counts[SecretStatus.MISSING],
        counts[SecretStatus.DISABLED],
        result.requests,
        (time.perf_counter() - started) * 1000,
    )


def _tried(planned: Sequence[PlannedSecret], vault_url: str) -> str:
    """``the vault X had none of secret(s) 'a', 'b'``: every name and vault tried, grouped."""
    if not planned:
        return f"the vault {vault_url} had none of no secret (not mapped)"
    groups: dict[tuple[str, ...], list[str]] = {}
    for secret in planned:
        groups.setdefault(secret.vaults or (vault_url,), []).extend(secret.names)
    parts = []
    for vaults, names in groups.items():
        where = f"the vault {vaults[0]}" if len(vaults) == 1 else "the vaults " + ", ".join(vaults)
        shown = ", ".join(repr(name) for name in dict.fromkeys(names))
        parts.append(f"{where} had none of secret(s) {shown}")
    return "; ".join(parts)


def _found_in(secrets: Mapping[tuple[str, str | None], FetchedSecret], key: Key) -> bool:
    secret = secrets.get(key)
    return secret is not None and secret.found


def insert_source(sources: tuple[Any, ...], source: KeyVaultSettingsSource) -> tuple[Any, ...]:
    """Put the vault source right before file secrets, else right before the defaults."""
    for index, existing in enumerate(sources):
        if isinstance(existing, SecretsSettingsSource):
            return (*sources[:index], source, *sources[index:])
    for index, existing in enumerate(sources):
        if isinstance(existing, DefaultSettingsSource):
            return (*sources[:index], source, *sources[index:])
    return (*sources, source)
