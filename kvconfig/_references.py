"""App Service Key Vault references: ``@Microsoft.KeyVault(...)`` values from other sources.

App Service resolves these two forms in app settings, and only inside App Service::

    @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>/<version?>)
    @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>;SecretVersion=<version?>)

kvconfig resolves them wherever the process runs (container, AKS, laptop). This module only
*parses*: it never sees a secret value, and its errors quote the reference (which names a vault
and a secret, never a value). A string that does not start with ``@Microsoft.KeyVault(`` is not a
reference and is left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from kvconfig._errors import ConfigurationError

__all__ = ["KeyVaultReference", "is_reference", "parse_reference", "vault_url_for_name"]

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


def _bad(text: str, why: str) -> ConfigurationError:
    # The reference names a vault and a secret; it is shown so the user can find the typo. It
    # is cut short so a value pasted by mistake after the prefix cannot be echoed in full.
    shown = text.strip()
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return ConfigurationError(f"malformed Key Vault reference {shown!r}: {why}")
