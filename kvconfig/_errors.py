"""The kvconfig exception tree.

Every error kvconfig raises derives from :class:`KvConfigError`::

    KvConfigError
    ├── ConfigurationError            the Settings class cannot be mapped to secrets
    │   ├── InvalidSecretNameError      a field maps to a name Key Vault cannot hold
    │   └── SecretNameCollisionError    two fields map to one secret
    ├── SettingsValidationError       the merged values do not validate (names fields, never values)
    │   ├── MissingSettingError         a required field had no value from any source
    │   └── KeyVaultReferenceError      an @Microsoft.KeyVault(...) value could not be resolved
    ├── VaultError                    talking to the vault failed (names the vault and the secret)
    │   ├── VaultAuthenticationError    401: the credential was refused
    │   ├── VaultPermissionError        403 other than a disabled secret
    │   └── VaultUnavailableError       transient failures outlasted the startup timeout
    │       └── MalformedResponseError      the vault (or a proxy) kept answering 2xx with a body
    │                                       that is not the expected JSON
    ├── ClosedError                   the KeyVault (or watcher) was used after aclose()
    └── EventFormatError              a push notification body is not Event Grid / CloudEvents

Messages name fields, secret names and the vault URL. They never contain a secret value.
"""

from __future__ import annotations

__all__ = [
    "ClosedError",
    "ConfigurationError",
    "EventFormatError",
    "InvalidSecretNameError",
    "KeyVaultReferenceError",
    "KvConfigError",
    "MalformedResponseError",
    "MissingSettingError",
    "SecretNameCollisionError",
    "SettingsValidationError",
    "VaultAuthenticationError",
    "VaultError",
    "VaultPermissionError",
    "VaultUnavailableError",
]


class KvConfigError(Exception):
    """Base class of every kvconfig error."""


class ConfigurationError(KvConfigError):
    """The Settings class cannot be mapped onto Key Vault secrets."""


class InvalidSecretNameError(ConfigurationError):
    """A field maps to a secret name that Key Vault cannot hold (``^[0-9a-zA-Z-]{1,127}$``)."""

    def __init__(self, message: str, *, field: str, secret_name: str) -> None:
        super().__init__(message)
        self.field = field
        self.secret_name = secret_name


class SecretNameCollisionError(ConfigurationError):
    """Two or more fields map to the same secret name (compared case-insensitively)."""

    def __init__(self, message: str, *, fields: tuple[str, ...], secret_name: str) -> None:
        super().__init__(message)
        self.fields = fields
        self.secret_name = secret_name


class SettingsValidationError(KvConfigError):
    """The merged values failed validation.

    ``errors`` holds pydantic's error dicts *without* the offending input, so the error can be
    logged safely.
    """

    def __init__(self, message: str, *, errors: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class MissingSettingError(SettingsValidationError):
    """A required field got no value from init kwargs, the environment, .env or the vault."""


class KeyVaultReferenceError(SettingsValidationError):
    """A Key Vault reference (``@Microsoft.KeyVault(...)``) in a value from another source
    (environment, dotenv, init kwargs) is malformed or names a secret the vault does not have.

    ``field`` is where the reference was found, ``reference`` the reference as written (it names
    a vault and a secret, never a value).
    """

    def __init__(self, message: str, *, field: str, reference: str) -> None:
        super().__init__(message, errors=[{"type": "key_vault_reference", "loc": (field,)}])
        self.field = field
        self.reference = reference


class VaultError(KvConfigError):
    """A request to the vault failed. ``vault_url`` and ``secret_name`` say where."""

    def __init__(
        self,
        message: str,
        *,
        vault_url: str,
        secret_name: str | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.vault_url = vault_url
        self.secret_name = secret_name
        self.status = status
        self.code = code


class VaultAuthenticationError(VaultError):
    """The vault refused the credential (401), or no token could be obtained."""


class VaultPermissionError(VaultError):
    """The identity lacks permission (403 other than ``SecretDisabled``). Not retried."""


class VaultUnavailableError(VaultError):
    """Transient failures (429, 5xx, network) did not clear within the allowed time.

    ``retry_after`` is the longest ``Retry-After`` (seconds) the vault sent, if any: a hint for
    whoever retries the whole operation later.
    """

    def __init__(
        self,
        message: str,
        *,
        vault_url: str,
        secret_name: str | None = None,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, vault_url=vault_url, secret_name=secret_name, status=status, code=code
        )
        self.retry_after = retry_after


class MalformedResponseError(VaultUnavailableError):
    """A 2xx answer whose body is not the expected JSON (a truncating proxy, a gateway's HTML
    page) kept coming back until the deadline. ``status`` is the HTTP status; the body is never
    kept (it may hold a value)."""


class ClosedError(KvConfigError):
    """An object was used after ``aclose()``."""


class EventFormatError(KvConfigError, ValueError):
    """A body given to ``notify()`` is not an Event Grid or CloudEvents event (or batch).

    The message says what is wrong with the shape; it never repeats the body.
    """
