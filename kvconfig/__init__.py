"""kvconfig: load pydantic-settings classes from Azure Key Vault, concurrently."""

from kvconfig._dropin import AzureKeyVaultSettingsSource
from kvconfig._errors import (
    ClosedError,
    ConfigurationError,
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
from kvconfig._refresh._health import Health
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
    "FetchedSecret",
    "Health",
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
