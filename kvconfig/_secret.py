"""The ``Secret`` marker: per-field secret name, version and vault, used inside ``Annotated``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from kvconfig._errors import ConfigurationError

__all__ = ["Secret"]

_VERSION_RE = re.compile(r"[0-9a-fA-F]{32}")
_ALIAS_RE = re.compile(r"[0-9A-Za-z_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Secret:
    """Say which Key Vault secret a field comes from.

    Use it as ``Annotated`` metadata::

        stripe: Annotated[SecretStr, Secret("payments-stripe-key")]
        signing_key: Annotated[SecretStr, Secret(version="0123456789abcdef0123456789abcdef")]
        telemetry: Annotated[Telemetry, Secret(vault="shared")]  # every leaf from "shared"

    Args:
        name: Explicit secret name. It wins over the field name, the alias and any nesting, and
            the ``KeyVault`` ``prefix`` is **not** applied to it. On a nested model field it also
            becomes the base of the children's names (``name--child``).
        version: Pin one version (32 hex characters) instead of the latest.
        vault: Read the field from this vault only: a vault URL, or an alias given to
            ``KeyVault(vaults={alias: url})``. Fallback vaults are not tried for it. On a
            nested model field it applies to every field below it and to the model's own
            JSON secret.

    Raises:
        ConfigurationError: ``version`` is not 32 hex characters, or ``vault`` is neither an
            https URL nor an alias. (An invalid ``name`` is reported at load time as
            :class:`~kvconfig.InvalidSecretNameError`, naming the field; an unknown alias too,
            as :class:`~kvconfig.ConfigurationError`.)
    """

    name: str | None = None
    version: str | None = None
    vault: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and not _VERSION_RE.fullmatch(self.version):
            raise ConfigurationError(
                f"Secret(version={self.version!r}) is not a Key Vault secret version "
                "(expected 32 hexadecimal characters)"
            )
        if self.version is not None:
            # Key Vault versions are lower-case; normalise so cache keys agree.
            object.__setattr__(self, "version", self.version.lower())
        if self.vault is not None:
            vault = self.vault.strip().rstrip("/")
            if "://" in vault:
                parts = urlsplit(vault)
                if parts.scheme.lower() != "https" or not parts.hostname:
                    raise ConfigurationError(
                        f"Secret(vault={self.vault!r}) must be an absolute https vault URL or an "
                        "alias"
                    )
            elif not _ALIAS_RE.fullmatch(vault):
                raise ConfigurationError(
                    f"Secret(vault={self.vault!r}) is neither an https vault URL nor an alias "
                    "(letters, digits, '-', '_', '.')"
                )
            object.__setattr__(self, "vault", vault)
