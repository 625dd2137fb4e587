"""What ``kvconfig explain`` and ``kvconfig demo`` show: the plan, what the vault holds and which
source supplies each field, as plain data (no argparse, no terminal code).

For every field of the Settings class (nested fields included): the secret name(s) it maps to
(the plan :meth:`kvconfig.KeyVault.load` uses), what the vault says about that secret (found /
missing / disabled / expired / not yet valid), its version and update time, and which source
would supply the value: pydantic-settings' own sources (init, environment, dotenv, secrets
directory, defaults) are run in the class's precedence order, with the vault source where
``load()`` puts it. Name collisions and invalid names are reported, not raised. Values are read
but never put in the report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
)
from pydantic_settings.exceptions import SettingsError
from pydantic_settings.sources import DefaultSettingsSource

from kvconfig._build import insert_source as _insert_source
from kvconfig._errors import (
    InvalidSecretNameError,
    SecretNameCollisionError,
    SettingsValidationError,
)
from kvconfig._model import FetchedSecret, SecretStatus
from kvconfig._names import PlannedSecret, SettingsPlan, is_valid_secret_name, plan_with_problems
from kvconfig._redact import safe_errors
from kvconfig._references import FoundReference, shown, substitute_in_sources
from kvconfig._routing import Resolution
from kvconfig._source import KeyVaultSettingsSource
from kvconfig._vault import KeyVault

__all__ = ["ExplainReport", "FieldReport", "Problem", "build_report", "explain", "format_time"]


# -- the report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldReport:
    """One field of the Settings class: its secret, what the vault holds, who supplies it.

    Attributes:
        field: Dotted field path (``"database.host"``).
        secret: The secret name the field maps to.
        pinned_version: The version the field pins, if any.
        required: No default on the path: some source must supply it.
        nested: The field is a model whose fields are listed after it.
        status: What the vault holds: ``found``, ``missing``, ``disabled``, ``expired``,
            ``not-yet-valid``, ``invalid-value`` (found, but not valid JSON for a complex field)
            or ``not-requested`` (the name is invalid).
        name_problem: ``"invalid"`` or ``"collision"`` (shares its name with another field)
            when ``load()`` would refuse the class because of this field's name, else ``None``.
        version: The version the vault returned.
        updated: When that version was last updated.
        expires_on: Its expiry, if set.
        sources: Every source that supplies a value for the field, highest precedence first.
        winner: The source whose value ``load()`` would use (``"default"`` for a default, ``None``
            when nothing supplies a required field).
        env_var: The environment variable (or dotenv key) that supplies the value, when the
            winner is ``env`` or ``dotenv`` and its name can be told.
        vault: The vault ``secret`` was read from (several vaults: the one that answered).
        tried: Every ``name in vault`` read for the field, in order (a prefix chain or fallback
            vaults give several; the last one decided).
        reference: The Key Vault reference (``@Microsoft.KeyVault(...)``) a higher-priority
            source gives for the field, resolved by ``load()``; ``None`` if none.
    """

    field: str
    secret: str
    pinned_version: str | None
    required: bool
    nested: bool
    status: str
    name_problem: str | None
    version: str | None
    updated: datetime | None
    expires_on: datetime | None
    sources: tuple[str, ...]
    winner: str | None
    env_var: str | None = None
    vault: str | None = None
    tried: tuple[str, ...] = ()
    reference: str | None = None

    @property
    def satisfied(self) -> bool:
        """Whether the field gets a value (from a source or its default)."""
        return self.winner is not None


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that makes ``load()`` fail (``error``) or deserves attention (``warning``)."""

    kind: str
    severity: str
    message: str
    fields: tuple[str, ...] = ()
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class ExplainReport:
    """The whole report: what ``kvconfig explain`` prints (as a table or as JSON)."""

    settings: str
    vault_url: str
    prefix: str
    fields: tuple[FieldReport, ...]
    problems: tuple[Problem, ...]
    requests: int
    duration_ms: float
    source_order: tuple[str, ...] = field(default=())
    prefixes: tuple[str, ...] = field(default=())
    fallback_vaults: tuple[str, ...] = field(default=())
    vaults: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether ``KeyVault.load()`` would succeed."""
        return not any(p.severity == "error" for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document (times as ISO 8601 strings)."""
        return {
            "settings": self.settings,
            "vault_url": self.vault_url,
            "prefix": self.prefix,
            "ok": self.ok,
            "requests": self.requests,
            "duration_ms": round(self.duration_ms, 1),
            "source_order": list(self.source_order),
            "prefixes": list(self.prefixes or (self.prefix,)),
            "fallback_vaults": list(self.fallback_vaults),
            "vaults": dict(self.vaults),
            "fields": [_field_json(f) for f in self.fields],
            "problems": [{**asdict(p), "fields": list(p.fields)} for p in self.problems],
        }


def _field_json(report: FieldReport) -> dict[str, Any]:
    data = asdict(report)
    for key in ("updated", "expires_on"):
        moment = data[key]
        data[key] = moment.isoformat() if moment is not None else None
    data["sources"] = list(report.sources)
    data["tried"] = list(report.tried)
    data["satisfied"] = report.satisfied
    return data


# -- building it ------------------------------------------------------------------------------


async def explain(
    settings_cls: type[BaseSettings],
    *,
    vault_url: str,
    credential: AsyncTokenCredential,
    ca_file: str | os.PathLike[str] | None = None,
    prefix: str | Sequence[str] = "",
    vaults: Mapping[str, str] | None = None,
    fallback_vaults: Sequence[str] | None = None,
    timeout: float = 30.0,
    name: str | None = None,
) -> ExplainReport:
    """Check ``settings_cls`` against the vault and report, field by field. Never shows values.

    Uses the same plan (:func:`~kvconfig._names.plan_with_problems`) and the same fetch path as
    :meth:`~kvconfig.KeyVault.load`. ``credential`` is closed afterwards.

    Raises:
        ConfigurationError: Bad ``prefix`` or ``ca_file``.
        VaultError: The vault refused the credential or stayed unavailable for ``timeout``.
    """
    started = time.perf_counter()
    try:
        vault = KeyVault(
            vault_url,
            credential,
            ca_file=ca_file,
            prefix=prefix,
            vaults=vaults,
            fallback_vaults=fallback_vaults,
            ttl=0,
            startup_timeout=timeout,
        )
    except BaseException:
        await credential.close()  # the vault would have closed it
        raise
    async with vault:
        plan, plan_problems = plan_with_problems(settings_cls, prefix)
        plan = vault._vaultset.route(plan)  # the vaults each field is read from, in order
        readable = replace(plan, secrets=tuple(s for s in plan if _readable(s)))
        references = vault._find_references(settings_cls, {})
        # The read behind load(): same chains, requests, retries and error translation.
        result = await vault._read(readable, references)
    secrets: dict[tuple[str, str | None], Resolution] = {
        planned.slot: resolution
        for planned, resolution in zip(readable.secrets, result.resolutions, strict=False)
    }
    found = {
        found.text: resolution
        for (found, _), resolution in zip(
            references, result.resolutions[len(readable.secrets) :], strict=True
        )
    }
    return build_report(
        settings_cls,
        plan,
        plan_problems,
        {slot: r.secret for slot, r in secrets.items()},
        vault_url=vault.vault_url,
        requests=result.requests,
        duration_ms=(time.perf_counter() - started) * 1000,
        name=name,
        resolutions=secrets,
        references=[(f, found[f.text]) for f, _ in references],
        fallback_vaults=vault.fallback_vaults,
        vaults=vault.vaults,
    )


def _readable(planned: PlannedSecret) -> bool:
    return all(is_valid_secret_name(name) for name in planned.names)


def build_report(
    settings_cls: type[BaseSettings],
    plan: SettingsPlan,
    plan_problems: Sequence[InvalidSecretNameError | SecretNameCollisionError],
    secrets: Mapping[tuple[str, str | None], FetchedSecret],
    *,
    vault_url: str,
    requests: int,
    duration_ms: float,
    name: str | None = None,
    resolutions: Mapping[tuple[str, str | None], Resolution] | None = None,
    references: Sequence[tuple[FoundReference, Resolution]] = (),
    fallback_vaults: Sequence[str] = (),
    vaults: Mapping[str, str] | None = None,
) -> ExplainReport:
    """The report for secrets already fetched (keyed by ``PlannedSecret.slot``). No I/O.

    ``resolutions`` say, per planned secret, which (vault, name) candidates were read and which
    one answered; ``references`` are the Key Vault references found in the other sources, with
    how each resolved.
    """
    problems = [_plan_problem(p) for p in plan_problems]
    values: dict[str, str] = {}
    by_field: dict[str, str] = {}
    for found, answered in references:
        by_field.setdefault(found.field.lower(), shown(found.text))
        if answered.secret.found and answered.secret.value is not None:
            values[found.text] = answered.secret.value
        else:
            problems.append(
                Problem(
                    "reference",
                    "error",
                    f'field "{found.field}" ({found.source}): Key Vault reference '
                    f"{shown(found.text)!r} cannot be resolved: secret "
                    f"{answered.candidate.ref.name!r} in {answered.vault_url} is "
                    f"{answered.secret.status.value}",
                    (found.field,),
                    answered.candidate.ref.name,
                )
            )
    sources, source_data, source_problems, undecodable = _run_sources(
        settings_cls, plan, secrets, values
    )
    problems.extend(source_problems)
    name_problems = _name_problems(plan_problems)
    fields: list[FieldReport] = []
    for planned in plan:
        secret = secrets.get(planned.slot) if is_valid_secret_name(planned.name) else None
        report = _field_report(
            planned,
            secret,
            source_data,
            name_problems.get(planned.field),
            invalid_value=planned.field in undecodable,
        )
        resolution = (resolutions or {}).get(planned.slot)
        if resolution is not None:
            report = replace(
                report,
                secret=resolution.candidate.ref.name,
                vault=resolution.vault_url,
                tried=tuple(f"{c.ref.name} in {c.vault_url}" for c in resolution.tried),
            )
        elif planned.vaults:
            report = replace(report, vault=planned.vaults[0])
        reference = by_field.get(".".join(planned.key_path).lower())
        if reference is not None and report.winner not in (None, "vault", "default"):
            report = replace(report, reference=reference)
        if report.winner in ("env", "dotenv"):
            source = sources[[label for label, _ in source_data].index(report.winner)]
            report = replace(report, env_var=_env_var(source, settings_cls, planned))
        fields.append(report)
    for report in fields:
        problems.extend(_field_problems(report, fields))
    problems.extend(_validate(settings_cls, sources, fields))
    return ExplainReport(
        settings=name or f"{settings_cls.__module__}:{settings_cls.__qualname__}",
        vault_url=vault_url,
        prefix=plan.prefix,
        fields=tuple(fields),
        problems=tuple(problems),
        requests=requests,
        duration_ms=duration_ms,
        source_order=tuple(label for label, _ in source_data),
        prefixes=plan.prefixes,
        fallback_vaults=tuple(fallback_vaults),
        vaults=dict(vaults or {}),
    )


def _name_problems(
    errors: Sequence[InvalidSecretNameError | SecretNameCollisionError],
) -> dict[str, str]:
    """Field path -> ``"invalid"`` / ``"collision"`` for every field named in a plan problem."""
    found: dict[str, str] = {}
    for error in errors:
        if isinstance(error, SecretNameCollisionError):
            for name in error.fields:
                found.setdefault(name, "collision")
        else:
            found[error.field] = "invalid"
    return found


def _plan_problem(error: InvalidSecretNameError | SecretNameCollisionError) -> Problem:
    if isinstance(error, SecretNameCollisionError):
        return Problem("collision", "error", str(error), error.fields, error.secret_name)
    return Problem("invalid_name", "error", str(error), (error.field,), error.secret_name)


def _source_label(source: PydanticBaseSettingsSource) -> str:
    # DotEnv derives from Env: test the subclass first.
    for cls, label in (
        (InitSettingsSource, "init"),
        (DotEnvSettingsSource, "dotenv"),
        (EnvSettingsSource, "env"),
        (SecretsSettingsSource, "secrets-dir"),
        (KeyVaultSettingsSource, "vault"),
        (DefaultSettingsSource, "default"),
    ):
        if isinstance(source, cls):
            return label
    return type(source).__name__


def _run_sources(
    settings_cls: type[BaseSettings],
    plan: SettingsPlan,
    secrets: Mapping[tuple[str, str | None], FetchedSecret],
    references: Mapping[str, str] | None = None,
) -> tuple[tuple[Any, ...], list[tuple[str, dict[str, Any]]], list[Problem], set[str]]:
    """Run the class's sources as ``load()`` arranges them; return each one's data by label.

    Also returns the fields whose vault value cannot be decoded (reported, then left out so the
    other fields can still be judged). The data holds values: it is only ever looked at for the
    presence of keys.
    """
    sources, _ = settings_cls._settings_init_sources(_init_kwargs={})
    if references:
        substitute_in_sources(sources, references)  # as load() resolves them
    if not any(isinstance(s, KeyVaultSettingsSource) for s in sources):
        sources = _insert_source(sources, KeyVaultSettingsSource(settings_cls))
    problems: list[Problem] = []
    undecodable: set[str] = set()
    data: list[tuple[str, dict[str, Any]]] = []
    for source in sources:
        label = _source_label(source)
        if isinstance(source, KeyVaultSettingsSource):
            data.append((label, _run_vault_source(source, plan, secrets, problems, undecodable)))
            continue
        try:
            data.append((label, source()))
        except (SettingsError, ValueError) as exc:
            # pydantic-settings names the field and source, never the value.
            problems.append(
                Problem("source_error", "error", f"{label} source: {str(exc).splitlines()[0]}")
            )
            data.append((label, {}))
    return tuple(sources), data, problems, undecodable


def _run_vault_source(
    source: KeyVaultSettingsSource,
    plan: SettingsPlan,
    secrets: Mapping[tuple[str, str | None], FetchedSecret],
    problems: list[Problem],
    undecodable: set[str],
) -> dict[str, Any]:
    """The vault source's data; a secret that does not decode is reported and left out."""
    kept = dict(secrets)
    for _ in range(len(plan) + 1):
        source._bind(plan, kept)
        try:
            return source()
        except SettingsValidationError as exc:
            locs = {_loc(e.get("loc")) for e in exc.errors}
            bad = [s for s in plan if s.key_path in locs]
            if not bad:
                break
            problems.append(
                Problem(
                    "invalid_value", "error", str(exc), tuple(s.field for s in bad), bad[0].name
                )
            )
            for planned in bad:
                undecodable.add(planned.field)
                kept.pop(planned.slot, None)
    source._bind(plan, {})
    return {}


def _env_var(
    source: PydanticBaseSettingsSource, settings_cls: type[BaseSettings], planned: PlannedSecret
) -> str | None:
    """The environment variable (or dotenv key) ``source`` reads ``planned``'s value from.

    Asks pydantic-settings for the field's candidate names (prefix, aliases, case), then, for a
    nested field, the ``env_nested_delimiter`` form. Best effort: ``None`` if it cannot tell.
    """
    if not isinstance(source, EnvSettingsSource):
        return None
    try:
        top = planned.field_path[0]
        names = [n for _, n, _ in source._extract_field_info(settings_cls.model_fields[top], top)]
        delimiter = source.env_nested_delimiter
        candidates: list[str] = []
        for name in names:
            if delimiter and len(planned.key_path) > 1:
                rest = delimiter.join(planned.key_path[1:])
                candidates.append(
                    name + delimiter + (rest if source.case_sensitive else rest.lower())
                )
            candidates.append(name)  # the whole value, as JSON for a model
        present = next((c for c in candidates if source.env_vars.get(c) is not None), None)
    except (AttributeError, KeyError, TypeError):  # pydantic-settings internals moved
        return None
    if present is None:
        return None
    return present if source.case_sensitive else present.upper()


def _loc(loc: object) -> tuple[str, ...]:
    return tuple(str(part) for part in loc) if isinstance(loc, tuple | list) else ()


def _has_key(data: Mapping[str, Any], key_path: Sequence[str]) -> bool:
    """Whether ``data`` holds a value at ``key_path`` (keys compared case-insensitively)."""
    node: Any = data
    for key in key_path:
        if not isinstance(node, Mapping):
            return False
        if key in node:
            node = node[key]
            continue
        matches = [k for k in node if isinstance(k, str) and k.lower() == key.lower()]
        if not matches:
            return False
        node = node[matches[0]]
    return node is not None


def _status(planned: PlannedSecret, secret: FetchedSecret | None) -> str:
    if not is_valid_secret_name(planned.name):
        return "not-requested"
    if secret is None:
        return "missing"
    if secret.status is SecretStatus.FOUND:
        if secret.is_expired():
            return "expired"
        if secret.is_not_yet_valid():
            return "not-yet-valid"
        return "found"
    return str(secret.status.value)


def _field_report(
    planned: PlannedSecret,
    secret: FetchedSecret | None,
    source_data: Sequence[tuple[str, Mapping[str, Any]]],
    name_problem: str | None,
    *,
    invalid_value: bool = False,
) -> FieldReport:
    supplied = tuple(label for label, data in source_data if _has_key(data, planned.key_path))
    if invalid_value:
        # The vault's value was left out to judge the other fields; it is what load() would
        # get (and fail on), so the vault still counts as supplying it.
        order = [label for label, _ in source_data]
        supplied = tuple(sorted({*supplied, "vault"}, key=order.index))
    winner: str | None = supplied[0] if supplied else None
    if winner is None and not planned.required:
        winner = "default"
    found = secret is not None and secret.status is SecretStatus.FOUND
    return FieldReport(
        field=planned.field,
        secret=planned.name,
        pinned_version=planned.version,
        required=planned.required,
        nested=planned.nested,
        status="invalid-value" if invalid_value else _status(planned, secret),
        name_problem=name_problem,
        version=secret.version if found and secret is not None else None,
        updated=secret.updated if secret is not None else None,
        expires_on=secret.expires_on if secret is not None else None,
        sources=supplied,
        winner=winner,
    )


def _field_problems(report: FieldReport, fields: Sequence[FieldReport]) -> list[Problem]:
    problems: list[Problem] = []
    # A model none of whose required fields is supplied: its fields' lines say which secrets to
    # create, so the model's own line would only repeat them.
    covered = report.nested and any(
        f.field.startswith(report.field + ".") and not f.satisfied for f in fields
    )
    if not report.satisfied and not covered:
        why = {
            "disabled": f"secret {report.secret!r} is disabled",
            "not-requested": f"secret name {report.secret!r} is invalid",
        }.get(report.status, f"secret {report.secret!r} is {report.status}")
        problems.append(
            Problem(
                "unsatisfied",
                "error",
                f'field "{report.field}" is required but no source supplies it ({why}; no '
                "environment variable or dotenv entry either)",
                (report.field,),
                report.secret,
            )
        )
    elif report.status == "disabled":
        problems.append(
            Problem(
                "disabled",
                "warning",
                f'secret {report.secret!r} is disabled; field "{report.field}" uses '
                f"{report.winner}",
                (report.field,),
                report.secret,
            )
        )
    if report.status == "expired" and "vault" in report.sources:
        problems.append(
            Problem(
                "expired",
                "warning",
                f"secret {report.secret!r} expired on {format_time(report.expires_on)}; Key Vault "
                f'still serves it (field "{report.field}")',
                (report.field,),
                report.secret,
            )
        )
    return problems


def _validate(
    settings_cls: type[BaseSettings], sources: tuple[Any, ...], fields: Sequence[FieldReport]
) -> list[Problem]:
    """Validate as ``load()`` would; report what fails beyond the fields already reported."""
    try:
        settings_cls(_build_sources=(sources, {}))
    except ValidationError as exc:
        # Already reported, with the reason: unsupplied fields and undecodable vault values.
        reported = {f.field for f in fields if not f.satisfied or f.status == "invalid-value"}
        problems: list[Problem] = []
        for error in safe_errors(exc, settings_cls):
            where = ".".join(str(part) for part in error["loc"])
            if error["type"] == "missing" and where in reported:
                continue
            problems.append(
                Problem(
                    "validation",
                    "error",
                    f"{where or settings_cls.__name__}: {error['msg']}",
                    (where,) if where else (),
                )
            )
        return problems
    except (SettingsError, SettingsValidationError, ValueError) as exc:
        return [Problem("validation", "error", str(exc).splitlines()[0])]
    return []


def format_time(moment: datetime | None) -> str:
    """A UTC time as ``2026-11-22 14:30:05Z``, or ``-``."""
    if moment is None:
        return "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")
