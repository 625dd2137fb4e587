"""kvconfig: load pydantic-settings classes from Azure Key Vault, concurrently.

Names are imported on first use (PEP 562 ``__getattr__``): ``import kvconfig`` and the pytest
plugin cost almost nothing until a name is touched; ``kvconfig.KeyVault`` then imports the Azure
SDK, aiohttp and pydantic-settings once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvconfig._dropin import AzureKeyVaultSettingsSource
    from kvconfig._errors import (
        ClosedError,
        ConfigurationError,
        EventFormatError,
        InvalidSecretNameError,
        KeyVaultReferenceError,
        KvConfigError,
        MalformedResponseError,
        MissingSettingError,
        SecretNameCollisionError,
        SettingsValidationError,
        VaultAuthenticationError,
        VaultError,
        VaultPermissionError,
        VaultUnavailableError,
    )
    from kvconfig._model import FetchedSecret, SecretStatus
    from kvconfig._names import PlannedSecret, SettingsPlan
    from kvconfig._refresh._events import ChangeEvent, SecretChange
    from kvconfig._refresh._health import Health, HealthIssue
    from kvconfig._refresh._watch import ChangeStream, LiveSettings
    from kvconfig._secret import Secret
    from kvconfig._source import KeyVaultSettingsSource
    from kvconfig._sync import SyncKeyVault, SyncLiveSettings
    from kvconfig._vault import KeyVault

__all__ = [
    "AzureKeyVaultSettingsSource",
    "ChangeEvent",
    "ChangeStream",
    "ClosedError",
    "ConfigurationError",
    "EventFormatError",
    "FetchedSecret",
    "Health",
    "HealthIssue",
    "InvalidSecretNameError",
    "KeyVault",
    "KeyVaultReferenceError",
    "KeyVaultSettingsSource",
    "KvConfigError",
    "LiveSettings",
    "MalformedResponseError",
    "MissingSettingError",
    "PlannedSecret",
    "Secret",
    "SecretChange",
    "SecretNameCollisionError",
    "SecretStatus",
    "SettingsPlan",
    "SettingsValidationError",
    "SyncKeyVault",
    "SyncLiveSettings",
    "VaultAuthenticationError",
    "VaultError",
    "VaultPermissionError",
    "VaultUnavailableError",
]

# public name -> private module defining it (the TYPE_CHECKING block above says the same to
# type checkers; tests/core/test_exports.py checks the two agree).
_WHERE: dict[str, str] = {
    "AzureKeyVaultSettingsSource": "kvconfig._dropin",
    "ChangeEvent": "kvconfig._refresh._events",
    "ChangeStream": "kvconfig._refresh._watch",
    "ClosedError": "kvconfig._errors",
    "ConfigurationError": "kvconfig._errors",
    "EventFormatError": "kvconfig._errors",
    "FetchedSecret": "kvconfig._model",
    "Health": "kvconfig._refresh._health",
    "HealthIssue": "kvconfig._refresh._health",
    "InvalidSecretNameError": "kvconfig._errors",
    "KeyVault": "kvconfig._vault",
    "KeyVaultReferenceError": "kvconfig._errors",
    "KeyVaultSettingsSource": "kvconfig._source",
    "KvConfigError": "kvconfig._errors",
    "LiveSettings": "kvconfig._refresh._watch",
    "MalformedResponseError": "kvconfig._errors",
    "MissingSettingError": "kvconfig._errors",
    "PlannedSecret": "kvconfig._names",
    "Secret": "kvconfig._secret",
    "SecretChange": "kvconfig._refresh._events",
    "SecretNameCollisionError": "kvconfig._errors",
    "SecretStatus": "kvconfig._model",
    "SettingsPlan": "kvconfig._names",
    "SettingsValidationError": "kvconfig._errors",
    "SyncKeyVault": "kvconfig._sync",
    "SyncLiveSettings": "kvconfig._sync",
    "VaultAuthenticationError": "kvconfig._errors",
    "VaultError": "kvconfig._errors",
    "VaultPermissionError": "kvconfig._errors",
    "VaultUnavailableError": "kvconfig._errors",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'kvconfig' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
