"""Fetching secrets: priming, bounded concurrency, retries, TTL cache and single-flight.

:class:`SecretFetcher` is the only code that reads one secret (through
:class:`~kvconfig._rawget.RawSecretReader`, which raises what ``SecretClient.get_secret``
raises). Its contract:

``await fetcher.fetch(refs, *, max_age=None, timeout=None) -> FetchResult``

- ``refs``: the :class:`~kvconfig._names.SecretRef` s to read (duplicates are fine).
- ``max_age``: accept cached results at most this old (seconds). ``None`` = the fetcher's TTL;
  ``0`` = bypass the cache (the result is still stored). Requests already in flight for a key
  are always joined (single-flight), whatever ``max_age``.
- ``timeout``: this caller's own budget in seconds (default: the startup timeout). Every attempt
  (token fetch included) gets at most what is left of it; then
  :class:`~kvconfig.VaultUnavailableError` names every secret that failed (its ``retry_after``
  carries the server's hint). A request shared with other callers keeps running while any of
  them still has time; a caller joining it never inherits another caller's deadline.
- Returns a :class:`FetchedSecret` per key: ``FOUND``, ``MISSING`` (404) or ``DISABLED``.
  Permanent errors (401, 403, 400, untrusted TLS) are raised at once, unretried, and stop the
  call's other requests: none is retried or started, and one already on the wire is left to
  finish within its timeout (cancelling a request mid-connect leaves a TLS connection closing
  that nobody closes: asyncio's ``create_connection`` cancelled just after its handshake).
- ``aclose()`` gives requests on the wire up to a second to finish, then cancels what is left,
  and awaits every request task, so the session closes over settled connections.

The first request of a client that has not authenticated yet is sent alone (*priming*): it pays
the 401 challenge and the token fetch once, then everything else goes out at once, bounded by
``max_concurrency``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from azure.core.exceptions import AzureError

from kvconfig._cache import CacheKey, SecretCache
from kvconfig._errors import ClosedError, VaultError
from kvconfig._model import FetchedSecret, FetchResult, SecretStatus
from kvconfig._names import SecretRef
from kvconfig._rawget import RawSecret, RawSecretReader
from kvconfig._retry import Deadline, RetryPolicy
from kvconfig._telemetry import outcome_name, telemetry
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


class _Unavailable(NamedTuple):
    reason: str
    retry_after: float | None = None


_NO_ANSWER = "no answer within the deadline"

# How long aclose() lets a request already on the wire finish before cancelling it.
_CLOSE_GRACE_S = 1.0


class _Flight:
    """One in-flight read of one secret, shared by every caller that needs it.

    ``deadline`` is the latest deadline of the callers waiting for it: a caller with more time
    joining extends it (and the attempt in progress), one with less just stops waiting.
    """

    __slots__ = (
        "abandoned",
        "attempts",
        "cut",
        "deadline",
        "key",
        "reason",
        "retry_after",
        "scope",
        "sending",
        "task",
        "waiters",
    )

    def __init__(self, key: CacheKey, deadline: float, cut: float) -> None:
        self.key = key
        self.attempts = 0
        self.waiters = 0
        self.deadline = deadline  # no attempt starts after it
        self.cut = cut  # an attempt still running then is cut off
        self.reason = _NO_ANSWER
        self.retry_after: float | None = None
        self.scope: asyncio.Timeout | None = None
        self.sending = False  # a request of this flight is on the wire
        self.abandoned = False  # nobody waits: finish the request on the wire, retry nothing
        self.task: asyncio.Task[FetchedSecret | _Unavailable]

    def extend(self, deadline: float, cut: float) -> None:
        self.deadline = max(self.deadline, deadline)
        if cut > self.cut:
            self.cut = cut
            if self.scope is not None and not self.scope.expired():
                self.scope.reschedule(cut)

    def unavailable(self) -> _Unavailable:
        return _Unavailable(self.reason, self.retry_after)


class SecretFetcher:
    """Reads secrets for one vault through one reader. See the module docstring.

    Args:
        reader: The vault's :class:`~kvconfig._rawget.RawSecretReader` (kvconfig's pipeline:
            SDK retries off).
        vault_url: For cache keys and error messages.
        cache: The TTL cache (shared with whoever else reads this vault, if wanted).
        max_concurrency: Requests in flight at most.
        startup_timeout: Default ``timeout`` of :meth:`fetch`, in seconds.
        request_timeout: Per-attempt connect and read timeout, in seconds.
        retry: The retry policy (backoff, jitter, ``Retry-After`` floor).
        token_ready: Set by the credential wrapper once the client holds a token; lets the
            other requests go out while the priming request is still in flight.
        semaphore: Share this limit on requests in flight (several vaults, one load) instead
            of a limit of ``max_concurrency`` of this fetcher's own.
    """

    def __init__(
        self,
        reader: RawSecretReader,
        *,
        vault_url: str,
        cache: SecretCache,
        max_concurrency: int,
        startup_timeout: float,
        request_timeout: float,
        retry: RetryPolicy,
        token_ready: asyncio.Event | None = None,
        semaphore: asyncio.Semaphore | None = None,
    ) -> None:
        self._reader = reader
        self._token_ready = token_ready
        self.vault_url = vault_url
        self.cache = cache
        self._semaphore = semaphore or asyncio.Semaphore(max_concurrency)
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.retry = retry
        self._flights: dict[CacheKey, _Flight] = {}
        # Every flight not yet finished, joinable or not (one whose last waiter left may still
        # have a request on the wire): aclose() settles them all.
        self._live: set[_Flight] = set()
        self._authenticated = False
        self._priming: _Flight | None = None
        self._closed = False
        self.total_requests = 0

    # -- public -----------------------------------------------------------------------------

    async def fetch(
        self,
        refs: Iterable[SecretRef],
        *,
        max_age: float | None = None,
        timeout: float | None = None,
        strict: bool = True,
    ) -> FetchResult:
        """Read ``refs`` (cache, then in-flight requests, then the vault). See module docstring.

        ``strict=False`` (refresh): no attempt starts after ``timeout``, but one in progress may
        finish (within ``request_timeout``), so an interval shorter than a round trip does not
        make every refresh fail. ``strict=True`` (load): nothing outlives ``timeout``.
        """
        self._check_open()
        started = time.monotonic()
        budget = self.startup_timeout if timeout is None else timeout
        last_start = started + budget
        deadline = Deadline(last_start if strict else last_start + self.request_timeout)
        wanted: dict[CacheKey, SecretRef] = {}
        for ref in refs:
            wanted.setdefault(self._key(ref), ref)
        results: dict[CacheKey, FetchedSecret] = {}
        cache_hits = self._from_cache(wanted, results, max_age)

        flights: dict[CacheKey, tuple[_Flight, bool]] = {}
        unavailable: dict[str, _Unavailable] = {}
        try:
            todo = [key for key in wanted if key not in results]
            if todo and not self._authenticated:
                await self._prime(wanted, todo, flights, last_start, deadline)
                if self._primed_badly(flights):
                    todo = []  # the vault is not answering: do not fan out into the outage
                else:
                    self._from_cache(
                        {k: wanted[k] for k in todo if k not in flights}, results, max_age
                    )
                    todo = [key for key in wanted if key not in results and key not in flights]
            for key in todo:
                flights[key] = self._join(key, wanted[key], last_start, deadline)
            await self._wait(flights, deadline)
            self._check_open(during=True)  # closed meanwhile: its answers are not a load
            for key, (flight, _) in flights.items():
                task = flight.task
                if not task.done() or task.cancelled():
                    unavailable[wanted[key].name] = flight.unavailable()
                    continue
                outcome = task.result()
                if isinstance(outcome, _Unavailable):
                    unavailable[wanted[key].name] = outcome
                else:
                    results[key] = outcome
        finally:
            for flight, _ in flights.values():
                self._leave(flight)

        if unavailable:
            hints = [u.retry_after for u in unavailable.values() if u.retry_after is not None]
            raise unavailable_error(
                vault_url=self.vault_url,
                failures={name: u.reason for name, u in unavailable.items()},
                waited=time.monotonic() - started,
                retry_after=max(hints) if hints else None,
            )
        return FetchResult(
            secrets={(key.name, key.version): secret for key, secret in results.items()},
            requests=sum(f.attempts for f, started_here in flights.values() if started_here),
            cache_hits=cache_hits,
            joined=sum(1 for _, started_here in flights.values() if not started_here),
        )

    async def aclose(self) -> None:
        """Stop every request and refuse further fetches. Idempotent.

        A request on the wire gets up to ``_CLOSE_GRACE_S`` to finish (see the module
        docstring); anything else (backoff sleeps, requests waiting for a slot) is cancelled at
        once; every request task is awaited.
        """
        self._closed = True
        self._flights.clear()
        live = list(self._live)
        for flight in live:
            flight.abandoned = True
            if not flight.sending:
                flight.task.cancel()
        sending = [flight.task for flight in live if flight.sending]
        if sending:
            await asyncio.wait(sending, timeout=_CLOSE_GRACE_S)
        tasks = [flight.task for flight in live]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def forget_absent(self, refs: Iterable[SecretRef]) -> None:
        """Drop cached missing/disabled answers for ``refs`` (after a load failed on them)."""
        self.cache.forget_absent(self._key(ref) for ref in refs)

    @property
    def authenticated(self) -> bool:
        """Whether a request has gone through the auth challenge (priming no longer needed)."""
        return self._authenticated

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

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
        last_start: float,
        deadline: Deadline,
    ) -> None:
        """Send one request alone so the challenge and token are paid once, not per secret.

        A caller arriving while another primes waits for that request (sharing it when it is
        for a secret it needs too) instead of sending its own unauthenticated requests.
        """
        while not self._authenticated:
            priming = self._priming
            if priming is None or priming.task.done():
                key = todo[0]
                flights[key] = self._join(key, wanted[key], last_start, deadline)
                flight = flights[key][0]
                self._priming = flight
                try:
                    await self._until_authenticated(flight, deadline)
                finally:
                    if self._priming is flight:
                        self._priming = None
                return
            if priming.key in wanted and priming.key not in flights:
                priming.waiters += 1
                priming.extend(last_start, deadline.at)
                flights[priming.key] = (priming, False)
            await self._until_authenticated(priming, deadline)
            if priming.key in flights or deadline.remaining() <= 0:
                return  # its outcome is ours (or we are out of time): the caller handles it

    async def _until_authenticated(self, flight: _Flight, deadline: Deadline) -> None:
        """Wait until the priming ``flight`` is done or the client holds a token, if sooner
        (or the caller's deadline passes).

        The token arrives one round trip before the priming response does: the SDK has cached
        the challenge by then and authorises every new request, so there is nothing to gain
        from waiting longer.
        """
        if self._token_ready is None or self._token_ready.is_set():
            await asyncio.wait([flight.task], timeout=deadline.remaining())
            return
        signal = asyncio.ensure_future(self._token_ready.wait())
        try:
            await asyncio.wait(
                [flight.task, signal],
                timeout=deadline.remaining(),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            signal.cancel()
        if signal.done() and not signal.cancelled():
            self._authenticated = True

    def _primed_badly(self, flights: Mapping[CacheKey, tuple[_Flight, bool]]) -> bool:
        """Raise a finished priming request's permanent error; True if it found an outage."""
        for flight, _ in flights.values():
            task = flight.task
            if not task.done():
                return not self._authenticated  # out of time before the vault answered
            if task.cancelled():
                self._check_open(during=True)
                return True
            error = task.exception()
            if error is not None:
                raise error
            if isinstance(task.result(), _Unavailable):
                return True
        return False

    def _join(
        self, key: CacheKey, ref: SecretRef, last_start: float, deadline: Deadline
    ) -> tuple[_Flight, bool]:
        """Join the flight for ``key``, starting one if none is usable. True = started here.

        ``last_start``: no attempt for this caller after it; ``deadline``: this caller stops
        waiting (and an attempt only it wants is cut off)."""
        flight = self._flights.get(key)
        started_here = False
        if flight is None or flight.task.done() or flight.task.cancelling():
            # Never join a request that is being cancelled (its last caller gave up).
            flight = _Flight(key, last_start, deadline.at)
            flight.task = asyncio.create_task(self._read(key, ref, flight))
            flight.task.add_done_callback(functools.partial(self._landed, key, flight))
            self._live.add(flight)
            self._flights[key] = flight
            started_here = True
        else:
            flight.extend(last_start, deadline.at)
        flight.waiters += 1
        return flight, started_here

    def _leave(self, flight: _Flight) -> None:
        flight.waiters -= 1
        if flight.waiters <= 0 and not flight.task.done():
            # Nobody wants this result any more (e.g. a permanent error elsewhere, or the
            # caller was cancelled): retry nothing, and let nobody join it from now on. A
            # request on the wire finishes (bounded by the flight's cut; see the module
            # docstring); anything else stops now.
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
            flight.abandoned = True
            if not flight.sending:
                flight.task.cancel()

    def _landed(
        self, key: CacheKey, flight: _Flight, task: asyncio.Task[FetchedSecret | _Unavailable]
    ) -> None:
        self._live.discard(flight)
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter re-raises it from result() anyway

    async def _wait(
        self, flights: Mapping[CacheKey, tuple[_Flight, bool]], deadline: Deadline
    ) -> None:
        """Wait for all flights until ``deadline``; on the first permanent error, raise it."""
        pending = {flight.task for flight, _ in flights.values() if not flight.task.done()}
        for flight, _ in flights.values():
            self._raise_failed(flight.task)
        while pending:
            remaining = deadline.remaining()
            if remaining <= 0:
                return
            done, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_EXCEPTION
            )
            if not done:
                return
            for task in done:
                self._raise_failed(task)

    def _raise_failed(self, task: asyncio.Task[FetchedSecret | _Unavailable]) -> None:
        if not task.done():
            return
        if task.cancelled():
            # A flight is cancelled only when its last waiter left or the fetcher closed.
            self._check_open(during=True)
            return
        error = task.exception()
        if error is not None:
            raise error

    # -- one secret ---------------------------------------------------------------------------

    async def _read(
        self, key: CacheKey, ref: SecretRef, flight: _Flight
    ) -> FetchedSecret | _Unavailable:
        """Read one secret, retrying transient failures with the retry policy until the
        flight's deadline (the latest of its callers')."""
        attempt = 0
        while True:
            attempt += 1
            flight.attempts += 1
            self.total_requests += 1
            failure: BaseException | None = None
            sent_at = time.time()
            try:
                async with asyncio.timeout_at(flight.cut) as scope:
                    flight.scope = scope
                    async with self._semaphore:
                        self._check_open(during=True)
                        if flight.abandoned:
                            return flight.unavailable()
                        sent_at = time.time()
                        flight.sending = True
                        try:
                            secret = await self._reader.get(
                                ref.name,
                                ref.version,
                                connection_timeout=self.request_timeout,
                                read_timeout=self.request_timeout,
                            )
                        finally:
                            flight.sending = False
            except (AzureError, TimeoutError, ValueError) as exc:
                if flight.scope is not None and flight.scope.expired():
                    # This attempt ran into the deadline: no caller is waiting any longer.
                    return flight.unavailable()
                failure = exc
            finally:
                flight.scope = None
            if failure is None:
                telemetry.request(self.vault_url, "get", "found")  # telemetry hook
                self._authenticated = True
                fetched = _found(ref.name, secret, sent_at)
                self.cache.put(key, fetched)
                return fetched

            verdict = classify(failure, vault_url=self.vault_url, secret_name=ref.name)
            telemetry.request(self.vault_url, "get", outcome_name(verdict))  # telemetry hook
            if verdict is None:
                raise failure
            del failure  # never chained: an SDK error can hold the response body (the value)
            if verdict.outcome is Outcome.PERMANENT:
                assert verdict.error is not None
                raise _unchained(verdict.error)

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

            flight.reason = verdict.reason
            flight.retry_after = verdict.retry_after
            delay = self.retry.delay(attempt, verdict.retry_after)
            if flight.abandoned:
                return flight.unavailable()
            if not Deadline(flight.deadline).allows(delay):
                logger.debug(
                    "giving up on secret %s after %d attempt(s): %s",
                    ref.name,
                    attempt,
                    verdict.reason,
                )
                return flight.unavailable()
            logger.debug(
                "secret %s: %s, retrying in %.3fs (attempt %d)",
                ref.name,
                verdict.reason,
                delay,
                attempt,
            )
            await asyncio.sleep(delay)

    def _check_open(self, *, during: bool = False) -> None:
        if self._closed:
            what = "was closed during a load" if during else "is closed"
            raise ClosedError(f"KeyVault({self.vault_url!r}) {what}")


def _unchained(error: VaultError) -> VaultError:
    """``error`` with no cause or context: the SDK exception it came from stays out of it."""
    error.__cause__ = None
    error.__context__ = None
    error.__suppress_context__ = True
    return error


def _found(name: str, secret: RawSecret, sent_at: float) -> FetchedSecret:
    return FetchedSecret(
        name=name,
        status=SecretStatus.FOUND,
        version=secret.version,
        value=secret.value,
        enabled=secret.enabled,
        content_type=secret.content_type,
        created=secret.created,
        updated=secret.updated,
        expires_on=secret.expires_on,
        not_before=secret.not_before,
        sent_at=sent_at,
    )
