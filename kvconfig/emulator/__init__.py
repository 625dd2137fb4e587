"""A local Azure Key Vault (secrets) emulator that the unmodified Azure SDK talks to over TLS.

Public names: :class:`KeyVaultEmulator`, :class:`CertificateAuthority`, :class:`RequestRecord`,
:class:`Faults`, :class:`ServiceError`. Run one from the shell with ``kvconfig emulator``.
"""

from __future__ import annotations

from kvconfig.emulator._certs import CertificateAuthority
from kvconfig.emulator._emulator import KeyVaultEmulator
from kvconfig.emulator._errors import ServiceError
from kvconfig.emulator._faults import Faults
from kvconfig.emulator._server import RequestRecord

__all__ = ["CertificateAuthority", "Faults", "KeyVaultEmulator", "RequestRecord", "ServiceError"]
