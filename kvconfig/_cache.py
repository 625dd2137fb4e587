"""``SecretCache``: the TTL cache of fetched secrets, keyed by :class:`CacheKey`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from kvconfig._model import FetchedSecret

__all__ = ["CacheKey", "SecretCache"]


class CacheKey(NamedTuple):
    """Cache identity of a secret: vault URL, lower-cased name, version (``None`` = latest)."""

    vault: str
    name: str
    version: str | None


NEGATIVE_TTL = 2.0  # seconds a missing/disabled answer is reused at most


class SecretCache:
    """TTL cache of :class:`FetchedSecret` (found, missing and disabled alike).

    A missing or disabled answer stays fresh for ``negative_ttl`` at most: long enough for
    concurrent loads to share it, short enough that a secret created to fix a failed load is
    seen at once (see also :meth:`forget_absent`).

    Args:
        ttl: Seconds an entry stays fresh. ``0`` disables caching (nothing is stored).
        clock: Monotonic clock, injectable for tests of the refresh logic.
        negative_ttl: Seconds a missing/disabled entry stays fresh at most.
    """

    __slots__ = ("_clock", "_entries", "negative_ttl", "ttl")

    def __init__(
        self,
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        negative_ttl: float = NEGATIVE_TTL,
    ) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._clock = clock
        self._entries: dict[CacheKey, tuple[FetchedSecret, float]] = {}

    def get(self, key: CacheKey, max_age: float | None = None) -> FetchedSecret | None:
        """The cached entry if it is at most ``max_age`` (default: ``ttl``) seconds old."""
        limit = self.ttl if max_age is None else min(max_age, self.ttl)
        if limit <= 0:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        secret, stored_at = entry
        if not secret.found:
            limit = min(limit, self.negative_ttl)
        if self._clock() - stored_at >= limit:
            return None
        return secret

    def put(self, key: CacheKey, secret: FetchedSecret) -> None:
        """Store ``secret`` as fresh now (no-op when caching is disabled)."""
        if self.ttl > 0:
            self._entries[key] = (secret, self._clock())

    def age(self, key: CacheKey) -> float | None:
        """Seconds since ``key`` was stored, or ``None``."""
        entry = self._entries.get(key)
        return None if entry is None else self._clock() - entry[1]

    def invalidate(self, key: CacheKey | None = None) -> None:
        """Forget one entry, or all of them."""
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    def forget_absent(self, keys: Iterable[CacheKey]) -> None:
        """Forget the missing/disabled entries among ``keys`` (a load that failed on them must
        not serve its own failure back to the next load)."""
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and not entry[0].found:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
