"""A local Azure Key Vault (secrets) emulator that the unmodified Azure SDK talks to over TLS.

Public names: :class:`KeyVaultEmulator`, :class:`CertificateAuthority`, :class:`RequestRecord`,
:class:`Faults`, :class:`ServiceError`, :class:`EmulatorThread` (for sync code).
Run one from the shell with ``kvconfig emulator``.
"""

from __future__ import annotations

from kvconfig.emulator._certs import CertificateAuthority
from kvconfig.emulator._emulator import KeyVaultEmulator
from kvconfig.emulator._errors import ServiceError
from kvconfig.emulator._faults import Faults
from kvconfig.emulator._server import RequestRecord
from kvconfig.emulator._thread import EmulatorThread

__all__ = [
    "CertificateAuthority",
    "EmulatorThread",
    "Faults",
    "KeyVaultEmulator",
    "RequestRecord",
    "ServiceError",
]
