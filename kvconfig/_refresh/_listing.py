"""One pass over ``GET /secrets``: list pages read as plain JSON, retried by the shared policy.

Failures are classified as GETs are (:mod:`kvconfig._translate`); the SDK exception is never
chained (it can hold a response body).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from azure.core.exceptions import AzureError, DecodeError, HttpResponseError
from azure.core.rest import HttpRequest
from azure.keyvault.secrets.aio import SecretClient

from kvconfig._errors import (
    ClosedError,
    MalformedResponseError,
    VaultError,
    VaultUnavailableError,
)
from kvconfig._retry import RetryPolicy
from kvconfig._telemetry import outcome_name, telemetry
from kvconfig._translate import MALFORMED, Outcome, classify

__all__ = [
    "PAGE_SIZE",
    "ListForbidden",
    "Listed",
    "RefreshUnavailableError",
    "list_secrets",
    "read_page",
]

logger = logging.getLogger("kvconfig")

PAGE_SIZE = 25  # Key Vault's default (and largest) list page


class RefreshUnavailableError(VaultUnavailableError):
    """Listing the vault kept failing transiently; ``retry_after`` is the server's hint, if any."""


class Listed(NamedTuple):
    """What a list item says about a secret."""

    updated: datetime | None
    enabled: bool
    name: str = ""  # as the vault spells it (the listing's key is lower-cased)


class ListForbidden(Exception):
    """The list was refused (403): ``reason`` and the ``requests`` it took."""

    def __init__(self, reason: str, requests: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.requests = requests


async def list_secrets(
    client: SecretClient,
    *,
    vault_url: str,
    retry: RetryPolicy,
    request_timeout: float,
    deadline: float,
    closed: Callable[[], bool],
) -> tuple[dict[str, Listed], int]:
    """One list pass: lower-cased name -> (updated, enabled), and the requests it took.

    Pages are read with ``SecretClient.send_request`` (same pipeline, authentication and
    transport as every other call) and parsed as plain JSON: the SDK's per-item model
    deserialisation would cost several times the CPU of the request itself, and only
    ``id``, ``attributes.updated`` and ``attributes.enabled`` are needed. Transient failures
    are retried (resuming at the failed page) with ``retry`` until ``deadline``.
    Raises :class:`ListForbidden` on a 403; ``closed()`` says whether the vault was closed.
    """
    listing: dict[str, Listed] = {}
    requests = 0
    attempt = 0
    started = time.monotonic()
    policy = retry
    url: str | None = "/secrets"  # the service's default page size (25)
    while url is not None:
        requests += 1
        failure: BaseException | None = None
        page: object = None
        try:
            # Unlike a load's GETs, a page in progress is not cut at the deadline: a pass
            # resumes at the failed page, and an interval shorter than one round trip
            # must not make every refresh fail. Retries stop at the deadline.
            response = await client.send_request(
                HttpRequest("GET", url),
                connection_timeout=request_timeout,
                read_timeout=request_timeout,
            )
            if response.status_code != 200:
                raise HttpResponseError(response=response)
            page = response.json()
            if not isinstance(page, dict):
                raise DecodeError("list page is not a JSON object")
        except (AzureError, TimeoutError, ValueError, RuntimeError) as exc:
            if isinstance(exc, ValueError) and not isinstance(exc, AzureError):
                failure = DecodeError("list page is not JSON")
            else:
                failure = exc
        if failure is not None:
            if closed():
                # aiohttp's "Session is closed" or a cancelled pass: the vault was closed.
                raise ClosedError(f"KeyVault({vault_url!r}) was closed during a refresh")
            if isinstance(failure, RuntimeError):
                raise failure
            verdict = classify(failure, vault_url=vault_url, secret_name="*")
            telemetry.request(vault_url, "list", outcome_name(verdict))  # telemetry hook
            status = getattr(failure, "status_code", None)
            del failure  # never chained: it can hold the response body
            if verdict is None:
                raise VaultError(
                    f"listing the secrets of vault {vault_url} failed",
                    vault_url=vault_url,
                )
            if verdict.outcome is not Outcome.TRANSIENT:
                if status == 403:
                    raise ListForbidden(verdict.reason, requests)
                if verdict.error is not None:
                    error = verdict.error
                    error.secret_name = None
                    error.args = (f"listing the secrets of vault {vault_url} failed: {error}",)
                    raise error
                raise VaultError(
                    f"listing the secrets of vault {vault_url} failed ({verdict.reason})",
                    vault_url=vault_url,
                    status=status,
                )
            attempt += 1
            delay = policy.delay(attempt, verdict.retry_after)
            if time.monotonic() + delay >= deadline:
                malformed = verdict.reason.startswith(MALFORMED)
                cls = MalformedResponseError if malformed else RefreshUnavailableError
                raise cls(
                    f"listing the secrets of vault {vault_url} failed for "
                    f"{time.monotonic() - started:.1f}s: {verdict.reason}",
                    vault_url=vault_url,
                    retry_after=verdict.retry_after,
                )
            logger.debug("list of %s: %s, retrying in %.3fs", vault_url, verdict.reason, delay)
            await asyncio.sleep(delay)
            continue
        telemetry.request(vault_url, "list", "ok")  # telemetry hook
        attempt = 0
        url = read_page(cast(dict[str, Any], page), listing)
    return listing, requests


def read_page(page: dict[str, Any], listing: dict[str, Listed]) -> str | None:
    """Add a ``SecretListResult`` page's items to ``listing``; return its ``nextLink``."""
    for item in page.get("value") or ():
        secret_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(secret_id, str):
            continue
        name = secret_id.rstrip("/").rsplit("/", 1)[-1]  # list ids carry no version
        attributes = item.get("attributes") or {}
        updated = attributes.get("updated")
        listing[name.lower()] = Listed(
            datetime.fromtimestamp(updated, UTC) if isinstance(updated, int | float) else None,
            attributes.get("enabled") is not False,
            name,
        )
    next_link = page.get("nextLink")
    return next_link if isinstance(next_link, str) and next_link else None
