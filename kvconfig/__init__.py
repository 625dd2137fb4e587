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

__all__ = [
    "ClosedError",
    "ConfigurationError",
    "InvalidSecretNameError",
    "KvConfigError",
    "MissingSettingError",
    "SecretNameCollisionError",
    "SettingsValidationError",
    "VaultAuthenticationError",
    "VaultError",
    "VaultPermissionError",
    "VaultUnavailableError",
]
