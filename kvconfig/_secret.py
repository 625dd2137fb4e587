"""The ``Secret`` marker: per-field secret name and version, used inside ``Annotated``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvconfig._errors import ConfigurationError

__all__ = ["Secret"]

_VERSION_RE = re.compile(r"[0-9a-fA-F]{32}")


@dataclass(frozen=True, slots=True)
class Secret:
    """Say which Key Vault secret a field comes from.

    Use it as ``Annotated`` metadata::

        stripe: Annotated[SecretStr, Secret("payments-stripe-key")]
        signing_key: Annotated[SecretStr, Secret(version="0123456789abcdef0123456789abcdef")]

    Args:
        name: Explicit secret name. It wins over the field name, the alias and any nesting, and
            the ``KeyVault`` ``prefix`` is **not** applied to it. On a nested model field it also
            becomes the base of the children's names (``name--child``).
        version: Pin one version (32 hex characters) instead of the latest.

    Raises:
        ConfigurationError: ``version`` is not 32 hex characters. (An invalid ``name`` is
            reported at load time as :class:`~kvconfig.InvalidSecretNameError`, naming the field.)
    """

    name: str | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and not _VERSION_RE.fullmatch(self.version):
            raise ConfigurationError(
                f"Secret(version={self.version!r}) is not a Key Vault secret version "
                "(expected 32 hexadecimal characters)"
            )
        if self.version is not None:
            # Key Vault versions are lower-case; normalise so cache keys agree.
            object.__setattr__(self, "version", self.version.lower())
