"""The one place where azure-core exceptions become kvconfig outcomes and errors.

:func:`classify` sorts a failed ``get_secret`` into:

- ``MISSING``: 404 (the field falls back to other sources or its default);
- ``DISABLED``: 403 ``SecretDisabled`` (treated as missing, with a warning);
- ``TRANSIENT``: 408, 429, 5xx, connection errors and timeouts (retried, honouring ``Retry-After``),
  and a 2xx whose body is not the expected JSON (a truncating proxy, a gateway's HTML page);
- ``PERMANENT``: everything else, carrying the kvconfig error to raise at once (401, other 403,
  400, certificate errors, a refused challenge resource, ...).

Messages name the vault, the secret, the status and the service's error code; never a value
(the service never echoes values in errors either). The SDK exception itself is never chained to
a kvconfig error: a ``DecodeError``'s message holds the response body, i.e. the secret value.
"""

from __future__ import annotations

import enum
import json
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from kvconfig._errors import (
    MalformedResponseError,
    VaultAuthenticationError,
    VaultError,
    VaultPermissionError,
    VaultUnavailableError,
)

__all__ = ["MALFORMED", "Classified", "Outcome", "classify", "unavailable_error"]

# Reason of a 2xx whose body is not the expected JSON; retried like any transient failure.
MALFORMED = "malformed response"

_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Outcome(enum.Enum):
    """What a failed request means for the load."""

    MISSING = "missing"
    DISABLED = "disabled"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Classified:
    """A classified failure: the outcome, a short description, and what to do about it.

    Attributes:
        outcome: The class of failure.
        reason: Short, value-free description (``"503 ServiceUnavailable"``) for messages/logs.
        retry_after: Seconds the server asked us to wait (``TRANSIENT`` only), if it said.
        error: The kvconfig error to raise (``PERMANENT`` only).
    """

    outcome: Outcome
    reason: str
    retry_after: float | None = None
    error: VaultError | None = None


def classify(exc: BaseException, *, vault_url: str, secret_name: str) -> Classified | None:
    """Classify an exception raised by ``SecretClient.get_secret``.

    Returns ``None`` for exceptions that are not about the vault (callers re-raise them as is).
    """
    if isinstance(exc, DecodeError) and not isinstance(exc, IncompleteReadError):
        status = exc.status_code
        return Classified(Outcome.TRANSIENT, f"{MALFORMED} ({status})" if status else MALFORMED)
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        # The same, without azure-core's content-decode policy in the pipeline: the SDK's
        # deserialiser parses the body itself (a 2xx whose body is not JSON).
        return Classified(Outcome.TRANSIENT, MALFORMED)
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        return _classify_status(exc, exc.status_code, vault_url=vault_url, secret_name=secret_name)
    if isinstance(exc, ClientAuthenticationError):
        # Raised without a response by azure-identity when no token can be obtained.
        return _permanent(
            VaultAuthenticationError,
            f"could not authenticate to vault {vault_url} while reading secret "
            f"{secret_name!r}: {type(exc).__name__}",
            vault_url=vault_url,
            secret_name=secret_name,
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError | IncompleteReadError):
        if _is_certificate_error(exc):
            return _permanent(
                VaultError,
                f"TLS certificate of vault {vault_url} is not trusted (pass ca_file= to trust a "
                f"private CA) while reading secret {secret_name!r}",
                vault_url=vault_url,
                secret_name=secret_name,
            )
        return Classified(Outcome.TRANSIENT, type(exc).__name__)
    if isinstance(exc, TimeoutError):
        return Classified(Outcome.TRANSIENT, "timeout")
    if isinstance(exc, ValueError) and "challenge resource" in str(exc):
        return _permanent(
            VaultAuthenticationError,
            f"vault {vault_url} sent an authentication challenge for another resource; the "
            "challenge-resource check is only relaxed for loopback hosts",
            vault_url=vault_url,
            secret_name=secret_name,
        )
    if isinstance(exc, ValueError):
        # The SDK's other ValueErrors: e.g. a proxy's 401 whose challenge is not Bearer.
        # The message is not shown: it could quote what the other side sent.
        return _permanent(
            VaultAuthenticationError,
            f"vault {vault_url} (or a proxy in front of it) answered reading secret "
            f"{secret_name!r} with something the SDK refused ({type(exc).__name__}); "
            "check proxies and the vault URL",
            vault_url=vault_url,
            secret_name=secret_name,
        )
    if isinstance(exc, AzureError):
        return _permanent(
            VaultError,
            f"reading secret {secret_name!r} from vault {vault_url} failed: {type(exc).__name__}",
            vault_url=vault_url,
            secret_name=secret_name,
        )
    return None


def _classify_status(
    exc: HttpResponseError, status: int, *, vault_url: str, secret_name: str
) -> Classified:
    code = _error_code(exc)
    reason = f"{status} {code}" if code else str(status)
    where = f"vault {vault_url}, secret {secret_name!r}"
    if status == 404 or isinstance(exc, ResourceNotFoundError):
        return Classified(Outcome.MISSING, reason)
    if status == 403 and code == "SecretDisabled":
        return Classified(Outcome.DISABLED, reason)
    if status in _TRANSIENT_STATUSES or status >= 500:
        return Classified(Outcome.TRANSIENT, reason, retry_after=_retry_after(exc))
    if status == 401:
        return _permanent(
            VaultAuthenticationError,
            f"the vault refused the credential ({reason}) for {where}",
            vault_url=vault_url,
            secret_name=secret_name,
            status=status,
            code=code,
        )
    if status == 403:
        return _permanent(
            VaultPermissionError,
            f"permission denied ({reason}) for {where}; the identity needs the secrets/get "
            "permission (RBAC role 'Key Vault Secrets User')",
            vault_url=vault_url,
            secret_name=secret_name,
            status=status,
            code=code,
        )
    return _permanent(
        VaultError,
        f"the vault rejected the request ({reason}) for {where}",
        vault_url=vault_url,
        secret_name=secret_name,
        status=status,
        code=code,
    )


def _permanent(
    cls: type[VaultError],
    message: str,
    *,
    vault_url: str,
    secret_name: str,
    status: int | None = None,
    code: str | None = None,
) -> Classified:
    error = cls(message, vault_url=vault_url, secret_name=secret_name, status=status, code=code)
    reason = f"{status} {code}" if status and code else (str(status) if status else cls.__name__)
    return Classified(Outcome.PERMANENT, reason, error=error)


def unavailable_error(
    *,
    vault_url: str,
    failures: dict[str, str],
    waited: float,
    retry_after: float | None = None,
) -> VaultUnavailableError:
    """The error raised when transient failures outlast the caller's deadline.

    Args:
        vault_url: The vault.
        failures: Secret name -> last failure reason, for every secret that could not be read.
        waited: Seconds spent trying.
        retry_after: The server's latest ``Retry-After`` hint, carried on the error.

    Every failure a malformed 2xx: :class:`~kvconfig.MalformedResponseError`.
    """
    names = sorted(failures)
    shown = ", ".join(f"{name!r} ({failures[name]})" for name in names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    malformed = bool(names) and all(r.startswith(MALFORMED) for r in failures.values())
    cls = MalformedResponseError if malformed else VaultUnavailableError
    statuses = {_malformed_status(r) for r in failures.values()} if malformed else set()
    what = (
        "kept answering with a body that is not the expected JSON (a proxy or gateway in between?)"
        if malformed
        else "stayed unavailable"
    )
    return cls(
        f"vault {vault_url} {what} for {waited:.1f}s; could not read secret(s) {shown}{more}",
        vault_url=vault_url,
        secret_name=names[0] if names else None,
        status=statuses.pop() if len(statuses) == 1 else None,
        retry_after=retry_after,
    )


def _malformed_status(reason: str) -> int | None:
    """The status in a ``"malformed response (200)"`` reason, if it has one."""
    inside = reason[len(MALFORMED) :].strip(" ()")
    return int(inside) if inside.isdigit() else None


def _error_code(exc: HttpResponseError) -> str | None:
    """The most specific service error code (``innererror.code`` over ``code``)."""
    error = exc.error
    if error is None:
        return None
    inner = getattr(error, "innererror", None)
    if isinstance(inner, dict) and isinstance(inner.get("code"), str):
        return str(inner["code"])
    code = getattr(error, "code", None)
    return code if isinstance(code, str) else None


def _retry_after(exc: HttpResponseError) -> float | None:
    """Seconds from ``Retry-After`` (seconds or HTTP date), else the ms variants (as azure-core)."""
    headers = getattr(exc.response, "headers", None)
    if headers is None:
        return None
    raw = headers.get("Retry-After")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    for header in ("retry-after-ms", "x-ms-retry-after-ms"):
        raw = headers.get(header)
        if raw:
            try:
                return max(0.0, float(raw) / 1000.0)
            except ValueError:
                pass
    return None


def _is_certificate_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        if type(current).__name__ == "ClientConnectorCertificateError":
            return True
        inner = getattr(current, "inner_exception", None)
        nxt = inner if isinstance(inner, BaseException) else None
        current = nxt or current.__cause__ or current.__context__
    return False
