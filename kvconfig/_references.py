"""App Service Key Vault references: ``@Microsoft.KeyVault(...)`` values from other sources.

App Service resolves these two forms in app settings, and only inside App Service::

    @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>/<version?>)
    @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>;SecretVersion=<version?>)

kvconfig resolves them wherever the process runs (container, AKS, laptop). This module
*parses* references, *finds* them in the values of pydantic-settings' other sources
(:func:`find_references`) and *substitutes* resolved values into those sources
(:func:`substitute_in_sources`); reading the secrets is the load's job (they are read
concurrently with the rest of the load). Its errors quote the reference (which names a vault and
a secret, never a value). A string that does not start with ``@Microsoft.KeyVault(`` is not a
reference and is left alone.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic_settings import (
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
)
from pydantic_settings.sources import DefaultSettingsSource

from kvconfig._errors import ConfigurationError, KeyVaultReferenceError
from kvconfig._source import KeyVaultSettingsSource

__all__ = [
    "FoundReference",
    "KeyVaultReference",
    "find_references",
    "is_reference",
    "parse_reference",
    "shown",
    "substitute_in_sources",
    "vault_url_for_name",
]

_PREFIX = "@microsoft.keyvault("
_NAME_RE = re.compile(r"[0-9a-zA-Z-]{1,127}")
_VERSION_RE = re.compile(r"[0-9a-zA-Z]{1,64}")
# A vault name: 3-24 characters, letters, digits and dashes (Key Vault's own rule).
_VAULT_NAME_RE = re.compile(r"[0-9a-zA-Z-]{3,24}")
_PUBLIC_SUFFIX = ".vault.azure.net"
_SUFFIXES = (
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
)


@dataclass(frozen=True, slots=True)
class KeyVaultReference:
    """A parsed reference: where to read the secret from.

    Attributes:
        text: The reference as written (safe to show: it names a vault and a secret only).
        vault: The vault URL (``https://host[:port]``) or, for the ``VaultName=`` form, the bare
            vault name to be resolved by :func:`vault_url_for_name`.
        by_name: Whether ``vault`` is a bare vault name (``VaultName=`` form).
        name: The secret name.
        version: The pinned version, or ``None`` for the latest.
    """

    text: str
    vault: str
    by_name: bool
    name: str
    version: str | None


def is_reference(value: object) -> bool:
    """Whether ``value`` is a string written as an App Service Key Vault reference."""
    return isinstance(value, str) and value.strip().lower().startswith(_PREFIX)


def parse_reference(text: str) -> KeyVaultReference:
    """Parse one reference; :class:`ConfigurationError` (quoting the reference) when malformed."""
    stripped = text.strip()
    if not stripped.lower().startswith(_PREFIX) or not stripped.endswith(")"):
        raise _bad(text, "expected @Microsoft.KeyVault(...)")
    body = stripped[len(_PREFIX) : -1].strip()
    parts: dict[str, str] = {}
    for item in body.split(";"):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep:
            raise _bad(text, f"expected KEY=VALUE, got {item.strip()!r}")
        parts[key.strip().lower()] = val.strip()
    if "secreturi" in parts:
        if len(parts) != 1:
            raise _bad(text, "SecretUri cannot be combined with other keys")
        return _from_uri(text, parts["secreturi"])
    unknown = set(parts) - {"vaultname", "secretname", "secretversion"}
    if unknown:
        raise _bad(text, f"unknown key {sorted(unknown)[0]!r}")
    vault, name = parts.get("vaultname", ""), parts.get("secretname", "")
    if not _VAULT_NAME_RE.fullmatch(vault):
        raise _bad(text, "VaultName must be 3-24 letters, digits or dashes")
    if not _NAME_RE.fullmatch(name):
        raise _bad(text, "SecretName must be 1-127 letters, digits or dashes")
    version = parts.get("secretversion") or None
    if version is not None and not _VERSION_RE.fullmatch(version):
        raise _bad(text, "SecretVersion must be letters and digits")
    return KeyVaultReference(stripped, vault, True, name, version)


def vault_url_for_name(vault_name: str, like: str) -> str:
    """The URL of vault ``vault_name`` in the same cloud as the vault URL ``like``."""
    host = (urlsplit(like).hostname or "").lower()
    suffix = next((s for s in _SUFFIXES if host.endswith(s)), _PUBLIC_SUFFIX)
    return f"https://{vault_name.lower()}{suffix}"


def _from_uri(text: str, uri: str) -> KeyVaultReference:
    parts = urlsplit(uri)
    if parts.scheme.lower() != "https" or not parts.hostname or parts.query or parts.fragment:
        raise _bad(text, "SecretUri must be https://<vault>/secrets/<name>[/<version>]")
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) not in (2, 3) or segments[0].lower() != "secrets":
        raise _bad(text, "SecretUri must be https://<vault>/secrets/<name>[/<version>]")
    name = segments[1]
    version = segments[2] if len(segments) == 3 else None
    if not _NAME_RE.fullmatch(name):
        raise _bad(text, "the secret name must be 1-127 letters, digits or dashes")
    if version is not None and not _VERSION_RE.fullmatch(version):
        raise _bad(text, "the secret version must be letters and digits")
    vault = f"https://{parts.netloc.lower()}"
    return KeyVaultReference(text.strip(), vault, False, name, version)


def shown(text: str) -> str:
    """A reference as error messages show it: stripped and cut at 200 characters."""
    # The reference names a vault and a secret; it is shown so the user can find the typo. It
    # is cut short so a value pasted by mistake after the prefix cannot be echoed in full.
    text = text.strip()
    return text[:200] + "..." if len(text) > 200 else text


def _bad(text: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"malformed Key Vault reference {shown(text)!r}: {why}")


# -- references in other sources' values ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FoundReference:
    """A reference found in a value of another settings source.

    Attributes:
        field: Where the value sits, dotted (``"database.password"``; keys as the source gives
            them, so an alias may appear).
        source: ``"init kwargs"``, ``"environment"``, ``"dotenv"``, ``"secrets directory"`` or the
            source's class name.
        text: The reference, stripped (the key :func:`substitute_in_sources` replaces).
    """

    field: str
    source: str
    text: str

    def parse(self) -> KeyVaultReference:
        """The parsed reference; :class:`~kvconfig.KeyVaultReferenceError` naming the field."""
        try:
            return parse_reference(self.text)
        except ConfigurationError as exc:
            message = str(exc)
        raise KeyVaultReferenceError(
            f'field "{self.field}" ({self.source}): {message}',
            field=self.field,
            reference=shown(self.text),
        )


def _source_label(source: PydanticBaseSettingsSource) -> str:
    # DotEnvSettingsSource subclasses EnvSettingsSource: test it first.
    for cls, label in (
        (InitSettingsSource, "init kwargs"),
        (DotEnvSettingsSource, "dotenv"),
        (EnvSettingsSource, "environment"),
        (SecretsSettingsSource, "secrets directory"),
    ):
        if isinstance(source, cls):
            return label
    return type(source).__name__


def _skipped(source: object) -> bool:
    return isinstance(source, DefaultSettingsSource | KeyVaultSettingsSource) or not isinstance(
        source, PydanticBaseSettingsSource
    )


def find_references(sources: Iterable[object]) -> tuple[FoundReference, ...]:
    """Every reference in the values the given sources provide (defaults and the vault's own
    source skipped). A source that fails here is skipped: the build reports its error."""
    found: list[FoundReference] = []
    for source in sources:
        if _skipped(source):
            continue
        assert isinstance(source, PydanticBaseSettingsSource)
        try:
            values = source()
        except Exception:
            continue
        label = _source_label(source)
        found.extend(FoundReference(path, label, text) for path, text in _walk(values, ()))
    return tuple(found)


def _walk(value: Any, path: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        if is_reference(value):
            yield ".".join(path), value.strip()
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, str(index)))


def substitute_in_sources(sources: Iterable[object], values: Mapping[str, str]) -> None:
    """Make each source (not the defaults, not the vault's) return ``values[reference]`` in place
    of every reference string it would return. The sources stay instances of their own class
    (pydantic-settings tells sources apart with ``isinstance``)."""
    for source in sources:
        if _skipped(source):
            continue
        assert isinstance(source, PydanticBaseSettingsSource)
        cls = type(source)
        if not getattr(cls, "_kvconfig_resolving", False):
            source.__class__ = _resolving(cls)
        source._kvconfig_references = values  # type: ignore[attr-defined]


@functools.cache
def _resolving(cls: type[PydanticBaseSettingsSource]) -> type[PydanticBaseSettingsSource]:
    def __call__(self: PydanticBaseSettingsSource) -> dict[str, Any]:
        data = cls.__call__(self)
        result = _replace(data, self._kvconfig_references)  # type: ignore[attr-defined]
        assert isinstance(result, dict)
        return result

    return type(
        cls.__name__,
        (cls,),
        {
            "__call__": __call__,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "_kvconfig_resolving": True,
        },
    )


def _replace(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        if is_reference(value):
            return values.get(value.strip(), value)
        return value
    if isinstance(value, dict):
        return {key: _replace(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace(item, values) for item in value]
    if isinstance(value, tuple):
        return tuple(_replace(item, values) for item in value)
    return value
