"""Key Vault service errors: status, code, message and inner code, as the real service sends them.

Messages marked "real" are copied from the service (see the reference, section 7); the others are
the emulator's own wording for cases whose real text is unknown.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServiceError"]

_NOT_FOUND_HELP = (
    "If you recently deleted this secret you may be able to recover it using the correct recovery "
    "command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)

# Default code per status for injected faults and generic errors.
_STATUS_CODES: dict[int, str] = {
    400: "BadParameter",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    429: "Throttled",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

_STATUS_MESSAGES: dict[int, str] = {
    429: (
        "Request was not processed because too many requests were received. "
        "Reason: VaultRequestTypeLimitReached"
    ),
    500: "An internal server error occurred. Please retry the request.",
    503: "The service is temporarily unavailable. Please retry the request later.",
}


class ServiceError(Exception):
    """An error answer of the vault API: ``{"error": {"code", "message", "innererror"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        inner_code: str | None = None,
        *,
        challenge: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code
        self.challenge = challenge  # a 401's WWW-Authenticate, when not the vault's usual one

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner_code is not None:
            error["innererror"] = {"code": self.inner_code}
        return {"error": error}

    # -- the errors of the reference, one constructor each -------------------------------------

    @classmethod
    def for_status(cls, status: int) -> ServiceError:
        """A generic error for an injected fault with this status."""
        code = _STATUS_CODES.get(status, "InternalServerError" if status >= 500 else "BadRequest")
        message = _STATUS_MESSAGES.get(status, f"The request failed with status {status}.")
        return cls(status, code, message)

    @classmethod
    def unauthorized(cls) -> ServiceError:
        """401 for a missing, empty or unknown bearer token (real)."""
        return cls(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")

    @classmethod
    def secret_not_found(cls, name_or_id: str) -> ServiceError:
        """404 for an unknown name or version (real)."""
        return cls(
            404,
            "SecretNotFound",
            f"A secret with (name/id) {name_or_id} was not found in this key vault. "
            + _NOT_FOUND_HELP,
        )

    @classmethod
    def deleted_secret_not_found(cls, name: str) -> ServiceError:
        """404 for get deleted / recover / purge of a name that is not deleted (real)."""
        return cls(404, "SecretNotFound", f"Deleted Secret not found: {name}")

    @classmethod
    def disabled(cls) -> ServiceError:
        """403 for a value get of a disabled secret (real)."""
        return cls(
            403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled"
        )

    @classmethod
    def deleted_but_recoverable(cls, name: str) -> ServiceError:
        """409 for a set on a soft-deleted name (real)."""
        return cls(
            409,
            "Conflict",
            f"Secret {name} is currently in a deleted but recoverable state, and its name cannot "
            "be reused; in this state, the secret can only be recovered or purged.",
            "ObjectIsDeletedButRecoverable",
        )

    @classmethod
    def restore_conflict(cls, name: str) -> ServiceError:
        """409 for a restore over an existing (active or deleted) name (own wording)."""
        return cls(
            409,
            "Conflict",
            f"Secret {name} already exists in this key vault or is in a deleted state; "
            "a backup can only be restored under a name that is not in use.",
        )

    @classmethod
    def invalid_name(cls, name: str) -> ServiceError:
        """400 for a name outside ``^[0-9a-zA-Z-]{1,127}$`` (real)."""
        return cls(400, "BadParameter", f"The request URI contains an invalid name: {name}")

    @classmethod
    def bad_parameter(cls, message: str) -> ServiceError:
        """400 ``BadParameter`` with the emulator's own message (real text unknown)."""
        return cls(400, "BadParameter", message)

    @classmethod
    def throttled(cls) -> ServiceError:
        """429 (real)."""
        return cls.for_status(429)
