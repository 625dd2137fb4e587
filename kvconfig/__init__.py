"""kvconfig: load pydantic-settings classes from Azure Key Vault, concurrently."""

from kvconfig._errors import (
    ClosedError,
    ConfigurationError,
    InvalidSecretNameError,
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
from kvconfig._names import PlannedSecret, SettingsPlan
from kvconfig._secret import Secret
from kvconfig._source import KeyVaultSettingsSource
from kvconfig._vault import KeyVault

__all__ = [
    "ClosedError",
    "ConfigurationError",
    "FetchedSecret",
    "InvalidSecretNameError",
    "KeyVault",
    "KeyVaultSettingsSource",
    "KvConfigError",
    "MissingSettingError",
    "PlannedSecret",
    "Secret",
    "SecretNameCollisionError",
    "SecretStatus",
    "SettingsPlan",
    "SettingsValidationError",
    "VaultAuthenticationError",
    "VaultError",
    "VaultPermissionError",
    "VaultUnavailableError",
]
