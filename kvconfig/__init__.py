"""kvconfig: load pydantic-settings classes from Azure Key Vault, concurrently."""

from kvconfig._changes import ChangeEvent, SecretChange
from kvconfig._dropin import AzureKeyVaultSettingsSource
from kvconfig._errors import (
    ClosedError,
    ConfigurationError,
    InvalidSecretNameError,
    KeyVaultReferenceError,
    KvConfigError,
    MissingSettingError,
    SecretNameCollisionError,
    SettingsValidationError,
    VaultAuthenticationError,
    VaultError,
    VaultPermissionError,
    VaultUnavailableError,
)
from kvconfig._fetch import FetchedSecret, SecretStatus
from kvconfig._health import Health
from kvconfig._names import PlannedSecret, SettingsPlan
from kvconfig._secret import Secret
from kvconfig._source import KeyVaultSettingsSource
from kvconfig._sync import SyncKeyVault, SyncLiveSettings
from kvconfig._vault import KeyVault
from kvconfig._watch import ChangeStream, LiveSettings

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
