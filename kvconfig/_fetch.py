"""Fetching secrets: priming, bounded concurrency, retries, TTL cache and single-flight.

:class:`SecretFetcher` is the only code that calls ``SecretClient.get_secret``. Its contract:

``await fetcher.fetch(refs, *, max_age=None, timeout=None) -> FetchResult``

- ``refs``: the :class:`~kvconfig._names.SecretRef` s to read (duplicates are fine).
- ``max_age``: accept cached results at most this old (seconds). ``None`` = the fetcher's TTL;
  ``0`` = bypass the cache (the result is still stored). Requests already in flight for a key
  are always joined (single-flight), whatever ``max_age``.
- ``timeout``: give up on transient failures after this many seconds (default: the startup
  timeout) with :class:`~kvconfig.VaultUnavailableError` naming every secret that failed.
- Returns a :class:`FetchedSecret` per key: ``FOUND``, ``MISSING`` (404) or ``DISABLED``.
  Permanent errors (401, 403, 400, untrusted TLS) are raised at once, unretried, and cancel the
  call's other requests.

The first request of a client that has not authenticated yet is sent alone (*priming*): it pays
the 401 challenge and the token fetch once, then everything else goes out at once, bounded by
``max_concurrency``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from azure.core.exceptions import AzureError
from azure.keyvault.secrets import KeyVaultSecret
from azure.keyvault.secrets.aio import SecretClient

from kvconfig._errors import ClosedError
from kvconfig._names import SecretRef
from kvconfig._translate import Outcome, classify, unavailable_error

__all__ = [
    "CacheKey",
    "FetchResult",
    "FetchedSecret",
    "SecretCache",
    "SecretFetcher",
    "SecretStatus",
]

logger = logging.getLogger("kvconfig")


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


class CacheKey(NamedTuple):
    """Cache identity of a secret: vault URL, lower-cased name, version (``None`` = latest)."""

    vault: str
    name: str
    version: str | None


class SecretCache:
    """TTL cache of :class:`FetchedSecret` (found, missing and disabled alike).

    Args:
        ttl: Seconds an entry stays fresh. ``0`` disables caching (nothing is stored).
        clock: Monotonic clock, injectable for tests of the refresh logic.
    """

    __slots__ = ("_clock", "_entries", "ttl")

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
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

    def __len__(self) -> int:
        return len(self._entries)


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


class _Unavailable(NamedTuple):
    reason: str


class _Flight:
    """One in-flight read of one secret, shared by every caller that needs it."""

    __slots__ = ("attempts", "key", "task", "waiters")

    def __init__(self, key: CacheKey) -> None:
        self.key = key
        self.attempts = 0
        self.waiters = 0
        self.task: asyncio.Task[FetchedSecret | _Unavailable]


class SecretFetcher:
    """Reads secrets for one vault through one ``SecretClient``. See the module docstring.

    Args:
        client: The aio ``SecretClient`` (kvconfig's: SDK retries off).
        vault_url: For cache keys and error messages.
        cache: The TTL cache (shared with whoever else reads this vault, if wanted).
        max_concurrency: Requests in flight at most.
        startup_timeout: Default ``timeout`` of :meth:`fetch`, in seconds.
        request_timeout: Per-attempt connect and read timeout, in seconds.
        retry_backoff: First backoff ceiling in seconds; doubles per attempt (full jitter).
        retry_backoff_max: Largest backoff ceiling in seconds.
        token_ready: Set by the credential wrapper once the client holds a token; lets the
            other requests go out while the priming request is still in flight.
        semaphore: Share this limit on requests in flight (several vaults, one load) instead
            of a limit of ``max_concurrency`` of this fetcher's own.
    """

    def __init__(
        self,
        client: SecretClient,
        *,
        vault_url: str,
        cache: SecretCache,
        max_concurrency: int,
        startup_timeout: float,
        request_timeout: float,
        retry_backoff: float,
        retry_backoff_max: float,
        token_ready: asyncio.Event | None = None,
        semaphore: asyncio.Semaphore | None = None,
    ) -> None:
        self._client = client
        self._token_ready = token_ready
        self.vault_url = vault_url
        self.cache = cache
        self._semaphore = semaphore or asyncio.Semaphore(max_concurrency)
        self.startup_timeout = startup_timeout
        self._request_timeout = request_timeout
        self._backoff = retry_backoff
        self._backoff_max = retry_backoff_max
        self._flights: dict[CacheKey, _Flight] = {}
        self._authenticated = False
        self._priming: _Flight | None = None
        self._closed = False
        self.total_requests = 0
        # The latest ``Retry-After`` (seconds) the vault sent: a hint for callers that back off
        # between whole fetches (live refresh) after this fetcher gave up.
        self.last_retry_after: float | None = None

    # -- public -----------------------------------------------------------------------------

    async def fetch(
        self,
        refs: Iterable[SecretRef],
        *,
        max_age: float | None = None,
        timeout: float | None = None,
    ) -> FetchResult:
        """Read ``refs`` (cache, then in-flight requests, then the vault). See module docstring."""
        self._check_open()
        started = time.monotonic()
        deadline = started + (self.startup_timeout if timeout is None else timeout)
        wanted: dict[CacheKey, SecretRef] = {}
        for ref in refs:
            wanted.setdefault(self._key(ref), ref)
        results: dict[CacheKey, FetchedSecret] = {}
        cache_hits = self._from_cache(wanted, results, max_age)

        flights: dict[CacheKey, tuple[_Flight, bool]] = {}
        try:
            todo = [key for key in wanted if key not in results]
            if todo and not self._authenticated:
                await self._prime(wanted, todo, flights, deadline)
                if self._primed_badly(flights):
                    todo = []  # the vault is not answering: do not fan out into the outage
                else:
                    self._from_cache(
                        {k: wanted[k] for k in todo if k not in flights}, results, max_age
                    )
                    todo = [key for key in wanted if key not in results and key not in flights]
            for key in todo:
                flights[key] = self._join(key, wanted[key], deadline)
            await self._wait(flights)
        finally:
            for flight, _ in flights.values():
                self._leave(flight)

        unavailable: dict[str, str] = {}
        for key, (flight, _) in flights.items():
            outcome = flight.task.result()
            if isinstance(outcome, _Unavailable):
                unavailable[wanted[key].name] = outcome.reason
            else:
                results[key] = outcome
        if unavailable:
            raise unavailable_error(
                vault_url=self.vault_url, failures=unavailable, waited=time.monotonic() - started
            )
        return FetchResult(
            secrets={(key.name, key.version): secret for key, secret in results.items()},
            requests=sum(f.attempts for f, started_here in flights.values() if started_here),
            cache_hits=cache_hits,
            joined=sum(1 for _, started_here in flights.values() if not started_here),
        )

    async def aclose(self) -> None:
        """Cancel requests in flight and refuse further fetches. Idempotent."""
        self._closed = True
        tasks = [flight.task for flight in self._flights.values()]
        self._flights.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def authenticated(self) -> bool:
        """Whether a request has gone through the auth challenge (priming no longer needed)."""
        return self._authenticated

    # -- steps of fetch() ------------------------------------------------------------------

    def _key(self, ref: SecretRef) -> CacheKey:
        return CacheKey(self.vault_url, ref.name.lower(), ref.version)

    def _from_cache(
        self,
        wanted: dict[CacheKey, SecretRef],
        results: dict[CacheKey, FetchedSecret],
        max_age: float | None,
    ) -> int:
        hits = 0
        for key in wanted:
            cached = self.cache.get(key, max_age)
            if cached is not None:
                results[key] = cached
                hits += 1
        return hits

    async def _prime(
        self,
        wanted: dict[CacheKey, SecretRef],
        todo: list[CacheKey],
        flights: dict[CacheKey, tuple[_Flight, bool]],
        deadline: float,
    ) -> None:
        """Send one request alone so the challenge and token are paid once, not per secret.

        A caller arriving while another primes waits for that request (sharing it when it is
        for a secret it needs too) instead of sending its own unauthenticated requests.
        """
        while not self._authenticated:
            priming = self._priming
            if priming is None or priming.task.done():
                key = todo[0]
                flights[key] = self._join(key, wanted[key], deadline)
                flight = flights[key][0]
                self._priming = flight
                try:
                    await self._until_authenticated(flight)
                finally:
                    if self._priming is flight:
                        self._priming = None
                return
            if priming.key in wanted and priming.key not in flights:
                priming.waiters += 1
                flights[priming.key] = (priming, False)
            await self._until_authenticated(priming)
            if priming.key in flights:
                return  # its outcome is ours: the caller handles failures

    async def _until_authenticated(self, flight: _Flight) -> None:
        """Wait until the priming ``flight`` is done or the client holds a token, if sooner.

        The token arrives one round trip before the priming response does: the SDK has cached
        the challenge by then and authorises every new request, so there is nothing to gain
        from waiting longer.
        """
        if self._token_ready is None or self._token_ready.is_set():
            await asyncio.wait([flight.task])
            return
        signal = asyncio.ensure_future(self._token_ready.wait())
        try:
            await asyncio.wait([flight.task, signal], return_when=asyncio.FIRST_COMPLETED)
        finally:
            signal.cancel()
        if signal.done() and not signal.cancelled():
            self._authenticated = True

    def _primed_badly(self, flights: Mapping[CacheKey, tuple[_Flight, bool]]) -> bool:
        """Raise a finished priming request's permanent error; True if it found an outage."""
        for flight, _ in flights.values():
            task = flight.task
            if not task.done():
                continue
            if task.cancelled():
                raise ClosedError(f"KeyVault({self.vault_url!r}) was closed during a load")
            error = task.exception()
            if error is not None:
                raise error
            if isinstance(task.result(), _Unavailable):
                return True
        return False

    def _join(self, key: CacheKey, ref: SecretRef, deadline: float) -> tuple[_Flight, bool]:
        """Join the flight for ``key``, starting one if none is usable. True = started here."""
        flight = self._flights.get(key)
        started_here = False
        if flight is None or flight.task.cancelled():
            flight = _Flight(key)
            flight.task = asyncio.create_task(self._read(key, ref, deadline, flight))
            flight.task.add_done_callback(functools.partial(self._landed, key, flight))
            self._flights[key] = flight
            started_here = True
        flight.waiters += 1
        return flight, started_here

    def _leave(self, flight: _Flight) -> None:
        flight.waiters -= 1
        if flight.waiters <= 0 and not flight.task.done():
            # Nobody wants this result any more (e.g. a permanent error elsewhere, or the
            # caller was cancelled): stop retrying it.
            flight.task.cancel()

    def _landed(
        self, key: CacheKey, flight: _Flight, task: asyncio.Task[FetchedSecret | _Unavailable]
    ) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter re-raises it from result() anyway

    async def _wait(self, flights: Mapping[CacheKey, tuple[_Flight, bool]]) -> None:
        """Wait for all flights; on the first permanent error, raise it at once."""
        pending = {flight.task for flight, _ in flights.values()}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.cancelled():
                    # Only possible if the fetcher was closed under us.
                    raise ClosedError(f"KeyVault({self.vault_url!r}) was closed during a load")
                error = task.exception()
                if error is not None:
                    raise error

    # -- one secret ---------------------------------------------------------------------------

    async def _read(
        self, key: CacheKey, ref: SecretRef, deadline: float, flight: _Flight
    ) -> FetchedSecret | _Unavailable:
        """Read one secret, retrying transient failures with jittered backoff until ``deadline``."""
        attempt = 0
        while True:
            attempt += 1
            flight.attempts += 1
            self.total_requests += 1
            try:
                async with self._semaphore:
                    sent_at = time.time()
                    secret = await self._client.get_secret(
                        ref.name,
                        ref.version,
                        connection_timeout=self._request_timeout,
                        read_timeout=self._request_timeout,
                    )
            except (AzureError, TimeoutError, ValueError) as exc:
                verdict = classify(exc, vault_url=self.vault_url, secret_name=ref.name)
                if verdict is None:
                    raise
                if verdict.outcome is Outcome.PERMANENT:
                    assert verdict.error is not None
                    raise verdict.error from exc
            else:
                self._authenticated = True
                fetched = _found(ref.name, secret, sent_at)
                self.cache.put(key, fetched)
                return fetched

            if verdict.outcome is not Outcome.TRANSIENT:
                self._authenticated = True  # the request got through authentication
                status = (
                    SecretStatus.MISSING
                    if verdict.outcome is Outcome.MISSING
                    else SecretStatus.DISABLED
                )
                fetched = FetchedSecret(
                    name=ref.name, status=status, version=ref.version, sent_at=sent_at
                )
                self.cache.put(key, fetched)
                return fetched

            if verdict.retry_after is not None:
                self.last_retry_after = verdict.retry_after
            delay = self._delay(attempt, verdict.retry_after)
            if time.monotonic() + delay > deadline:
                logger.debug(
                    "giving up on secret %s after %d attempt(s): %s",
                    ref.name,
                    attempt,
                    verdict.reason,
                )
                return _Unavailable(verdict.reason)
            logger.debug(
                "secret %s: %s, retrying in %.3fs (attempt %d)",
                ref.name,
                verdict.reason,
                delay,
                attempt,
            )
            await asyncio.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff; the server's ``Retry-After`` wins when given."""
        if retry_after is not None:
            return retry_after
        ceiling = min(self._backoff_max, self._backoff * (2 ** (attempt - 1)))
        return random.uniform(0.0, ceiling)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"KeyVault({self.vault_url!r}) is closed")


def _found(name: str, secret: KeyVaultSecret, sent_at: float) -> FetchedSecret:
    props = secret.properties
    return FetchedSecret(
        name=name,
        status=SecretStatus.FOUND,
        version=props.version,
        value=secret.value if secret.value is not None else "",
        enabled=props.enabled,
        content_type=props.content_type,
        created=props.created_on,
        updated=props.updated_on,
        expires_on=props.expires_on,
        not_before=props.not_before,
        sent_at=sent_at,
    )
