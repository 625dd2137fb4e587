"""What a read of the vault produced: :class:`FetchedSecret` per secret, :class:`FetchResult`
per fetch. Plain data, no I/O; values never appear in reprs."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kvconfig._names import SecretRef

__all__ = ["FetchResult", "FetchedSecret", "SecretStatus"]


class SecretStatus(enum.Enum):
    """What the vault said about a secret."""

    FOUND = "found"
    MISSING = "missing"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class FetchedSecret:
    """One secret as read from the vault (or its absence). ``value`` never appears in reprs."""

    name: str
    status: SecretStatus
    version: str | None = None
    value: str | None = field(default=None, repr=False)
    enabled: bool | None = None
    content_type: str | None = None
    created: datetime | None = None
    updated: datetime | None = None
    expires_on: datetime | None = None
    not_before: datetime | None = None
    # Wall-clock time (time.time()) the request that produced this answer was sent; kept with
    # cached and shared answers, so refresh knows how recent each observation really is.
    sent_at: float | None = field(default=None, compare=False)

    @property
    def found(self) -> bool:
        """Whether the secret exists, is enabled and has a value."""
        return self.status is SecretStatus.FOUND

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether ``expires_on`` is in the past (Key Vault still serves expired secrets)."""
        if self.expires_on is None:
            return False
        return self.expires_on <= (now or datetime.now(UTC))

    def is_not_yet_valid(self, now: datetime | None = None) -> bool:
        """Whether ``not_before`` is in the future (Key Vault still serves such secrets)."""
        if self.not_before is None:
            return False
        return self.not_before > (now or datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one :meth:`SecretFetcher.fetch` call got.

    Attributes:
        secrets: Result per ``SecretRef.key`` (lower-cased name, version).
        requests: HTTP attempts made by requests this call started (retries included; joined
            in-flight requests and cache hits are not counted).
        cache_hits: Keys served from the cache.
        joined: Keys served by joining a request already in flight.
    """

    secrets: Mapping[tuple[str, str | None], FetchedSecret]
    requests: int
    cache_hits: int
    joined: int

    def get(self, ref: SecretRef) -> FetchedSecret | None:
        """The result for ``ref``, if it was requested."""
        return self.secrets.get(ref.key)
