"""``LiveSettings``: a Settings instance kept fresh by one background task.

Created by :meth:`kvconfig.KeyVault.watch`, which hands it a :class:`~kvconfig._vault.VaultLink`:
the narrow contract (fetcher, client, the one load path, build, closed) it drives the vault
through. The refresh path is the load path: the same fetcher (retries, cache, single-flight),
the same plan and the same build and validation; change detection is in
`kvconfig._refresh._detect`. Every publish goes through :meth:`LiveSettings._apply` (validate the
complete new Settings, then swap): the poll path and :meth:`LiveSettings._refresh_names` (re-read
a given set of secrets) both end there. Push refresh (:meth:`LiveSettings.notify`, a
:class:`~kvconfig._refresh._push.PushScheduler`) and ``shared_dir`` (a
:class:`~kvconfig._refresh._hostshare.HostShare`) are driven through their documented contracts,
in the blocks of that name below.

``on_change`` and ``on_refresh_error`` callbacks never run inside a refresh: a published event
or a failure is queued for one dispatcher task that awaits the callbacks in order; one still
running after ``on_change_timeout`` is cancelled, logged and skipped.

A refresh never publishes an invalid configuration: the complete new Settings is built and
validated first, and ``current`` is replaced in one assignment only when a value changed. Every
failure (vault unavailable, throttled, refused, invalid values, a bug) leaves the last-known-good
in place, is recorded in :attr:`LiveSettings.health` and is retried: transient failures with
exponential backoff and full jitter capped by the interval (``Retry-After`` honoured), others at
the next interval.

An invalid new value of one secret holds back only that secret: see :meth:`LiveSettings._apply`.
Health (:class:`~kvconfig.Health`) keeps *serving* (a validated Settings is published), *fresh*
(last success within ``max_staleness``) and *degraded* (``issues``) apart.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import os
import random
import threading
import time
import traceback
import weakref
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from pydantic_settings import BaseSettings

from kvconfig._errors import (
    ClosedError,
    ConfigurationError,
    KvConfigError,
    SettingsValidationError,
    VaultUnavailableError,
)
from kvconfig._refresh._detect import NotYetValid, OnMissing
from kvconfig._refresh._events import ChangeEvent, SecretChange, changed_fields
from kvconfig._refresh._health import Health
from kvconfig._refresh._routed import RoutedDetection, RoutedDetector, RoutedProposal
from kvconfig._routing import chain
from kvconfig._telemetry import telemetry

if TYPE_CHECKING:
    from kvconfig._refresh._hostshare import HostShare
    from kvconfig._refresh._push import NotifyResult, PushScheduler
    from kvconfig._vault import VaultLink

__all__ = ["ChangeCallback", "ChangeStream", "ErrorCallback", "LiveSettings"]

logger = logging.getLogger("kvconfig")

SettingsT = TypeVar("SettingsT", bound=BaseSettings)
ChangeCallback = Callable[[ChangeEvent], Awaitable[None] | None]
ErrorCallback = Callable[[KvConfigError], Awaitable[None] | None]

_STREAM_SIZE = 64  # events a slow changes() consumer may lag behind before the oldest are dropped
_EXPIRY_LEAD_MAX = 30.0  # at most this many seconds before `expires_on`, check for a new version
_ERRORS_PENDING_MAX = 8  # errors queued for a slow on_refresh_error; later ones are dropped
NOTIFY_MAX_DELAY = 30.0  # default: a pushed change is re-read within this many seconds


def _seconds(value: float | timedelta, name: str, *, positive: bool = False) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0 or (positive and seconds == 0):
        raise ConfigurationError(f"{name} must be {'> 0' if positive else '>= 0'}, got {seconds}")
    return seconds


class ChangeStream:
    """Async iterator over the change events published after it was created.

    Returned by :meth:`LiveSettings.changes`. It holds at most 64 unread events; when the consumer
    falls further behind, the oldest are dropped (with a warning, and a gap in ``generation``).
    It ends when the live settings close. Dropping the iterator (``break``) unsubscribes it.
    """

    def __init__(self, maxsize: int = _STREAM_SIZE) -> None:
        self._queue: collections.deque[ChangeEvent] = collections.deque()
        self._maxsize = maxsize
        self._wakeup = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChangeEvent:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    def _push(self, event: ChangeEvent) -> None:
        if self._closed:
            return
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1:
                logger.warning(
                    "a changes() consumer is more than %d events behind; dropping the oldest",
                    self._maxsize,
                )
        self._queue.append(event)
        self._wakeup.set()

    def _close(self) -> None:
        self._closed = True
        self._wakeup.set()


class LiveSettings(Generic[SettingsT]):
    """The latest validated Settings, refreshed in the background. See :meth:`KeyVault.watch`.

    ::

        async with vault.watch(Settings, interval=60) as live:
            live.current            # plain attribute: no I/O, no lock
            await live.refresh()    # refresh now: the ChangeEvent, or None
            live.notify(events)     # push refresh: Key Vault events -> targeted re-reads
            async for change in live.changes():
                ...

    ``current`` exists once the ``async with`` block is entered. Leaving it cancels and awaits
    the background task; it does not close the vault.
    """

    current: SettingsT

    def __init__(
        self,
        vault: VaultLink,
        settings_cls: type[SettingsT],
        *,
        interval: float | timedelta = 60.0,
        max_staleness: float | timedelta | None = None,
        on_missing: OnMissing = "keep",
        not_yet_valid: NotYetValid = "ignore",
        on_change: ChangeCallback | None = None,
        clock_skew: float | timedelta = 1.0,
        init_kwargs: dict[str, Any] | None = None,
        on_change_timeout: float | timedelta = 30.0,
        on_refresh_error: ErrorCallback | None = None,
        notify_max_delay: float | timedelta = NOTIFY_MAX_DELAY,
        shared_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if on_missing not in ("keep", "default"):
            raise ConfigurationError(f"on_missing must be 'keep' or 'default', got {on_missing!r}")
        if not_yet_valid not in ("ignore", "accept"):
            raise ConfigurationError(
                f"not_yet_valid must be 'ignore' or 'accept', got {not_yet_valid!r}"
            )
        self._vault = vault
        self._settings_cls = settings_cls
        self._interval = _seconds(interval, "interval", positive=True)
        self._max_staleness = (
            3 * self._interval
            if max_staleness is None
            else _seconds(max_staleness, "max_staleness", positive=True)
        )
        self._on_missing: OnMissing = on_missing
        self._not_yet_valid: NotYetValid = not_yet_valid
        self._on_change = on_change
        self._on_change_timeout = _seconds(on_change_timeout, "on_change_timeout", positive=True)
        self._on_refresh_error = on_refresh_error
        self._pending: asyncio.Queue[ChangeEvent | KvConfigError] = asyncio.Queue()
        self._errors_pending = 0
        self._rejections_logged: set[tuple[str, str | None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._clock_skew = _seconds(clock_skew, "clock_skew")
        self._init_kwargs = dict(init_kwargs or {})
        self._plan = vault.plan(settings_cls)  # naming errors surface here, before any I/O
        self._detector: RoutedDetector | None = None
        self._state = "new"
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[ChangeEvent | None] | None = None
        self._streams: weakref.WeakSet[ChangeStream] = weakref.WeakSet()
        self._generation = 0
        self._last_success = datetime.now(UTC)
        self._last_success_at = time.monotonic()
        self._last_error: str | None = None
        self._consecutive_failures = 0
        self._refreshes = 0
        self._failures = 0
        # Push refresh (notify) and host sharing (shared_dir): see the blocks below.
        self._notify_max_delay = _seconds(notify_max_delay, "notify_max_delay")
        self._pushes: dict[str, PushScheduler] = {}  # vault URL -> its scheduler
        self._loop_thread: int | None = None
        self._shared_dir = None if shared_dir is None else os.fspath(shared_dir)
        self._share: HostShare | None = None
        self._share_resync = False  # a follower's targeted re-read failed: detect on its own
        self._share_sent: dict[tuple[str, str], str | None] = {}  # last published/seen versions
        self._serial = asyncio.Lock()  # one refresh (poll or targeted) at a time

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Load like :meth:`KeyVault.load` (same errors), then start the background task."""
        if self._state != "new":
            raise ClosedError(f"{self!r} can be entered only once")
        vault = self._vault
        plan = self._plan
        await self._open_share()  # before the load: a rotation after it is then not missed
        try:
            loaded = await vault.load(
                self._settings_cls, plan, self._init_kwargs, not_yet_valid=self._not_yet_valid
            )
        except BaseException:
            await self._close_share()
            raise
        self.current = loaded.settings
        plan = self._plan = loaded.plan  # what a higher-priority source supplies is never tracked
        # One detector per vault involved (list or GET mode each), one verdict per refresh; the
        # secrets behind Key Vault references are tracked too.
        self._detector = RoutedDetector(
            plan,
            loaded.references,
            vault.pool(),
            on_missing=self._on_missing,
            not_yet_valid=self._not_yet_valid,
            clock_skew=self._clock_skew,
            request_timeout=vault.request_timeout,
        )
        self._detector.start(loaded.result, loaded.reference_values)
        self._last_success = datetime.now(UTC)
        self._last_success_at = time.monotonic()
        self._share_sent = self._held_versions()
        await self._start_push()
        self._state = "running"
        telemetry.watching(self, self._settings_cls.__name__, vault.vault_url)  # telemetry hook
        self._task = asyncio.create_task(
            self._run(), name=f"kvconfig-watch-{self._settings_cls.__name__}"
        )
        if self._on_change is not None or self._on_refresh_error is not None:
            self._dispatcher = asyncio.create_task(
                self._dispatch(), name=f"kvconfig-callbacks-{self._settings_cls.__name__}"
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the background task (cancel and await it) and end every ``changes()`` iterator.

        Idempotent. ``current`` stays readable; the vault stays open.
        """
        if self._state == "closed":
            return
        self._state = "closed"
        tasks = [
            t
            for t in (self._task, self._inflight, self._dispatcher)
            if t is not None and not t.done()
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_push()
        await self._close_share()
        for stream in list(self._streams):
            stream._close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._state == "closed"

    @property
    def generation(self) -> int:
        """The generation in ``current``: 0 after the initial load, +1 per published change."""
        return self._generation

    @property
    def interval(self) -> float:
        """Most seconds between refreshes (each jittered down by up to 10 %)."""
        return self._interval

    def __repr__(self) -> str:
        return (
            f"LiveSettings({self._settings_cls.__name__}, {self._vault.vault_url!r}, "
            f"generation={self._generation}, {self._state})"
        )

    # -- public API ----------------------------------------------------------------------------

    @property
    def health(self) -> Health:
        """A snapshot: ``serving`` (readiness), ``fresh`` and ``degraded`` (alerts), the last
        error (never a value), counters. See :class:`~kvconfig.Health`."""
        staleness = time.monotonic() - self._last_success_at
        serving = self._state == "running"
        fresh = serving and staleness <= self._max_staleness
        issues = self._detector.issues() if self._detector is not None and serving else ()
        return Health(
            healthy=fresh,
            generation=self._generation,
            last_success=self._last_success,
            staleness=staleness,
            max_staleness=self._max_staleness,
            last_error=self._last_error,
            consecutive_failures=self._consecutive_failures,
            refreshes=self._refreshes,
            failures=self._failures,
            mode=self._detector.mode() if self._detector is not None else "get",
            serving=serving,
            fresh=fresh,
            degraded=bool(issues),
            issues=issues,
            vaults=self._detector.modes() if self._detector is not None else {},
            **self._push_share_health(),
        )

    async def refresh(self) -> ChangeEvent | None:
        """Refresh now; return the published change, or ``None`` if nothing changed.

        Concurrent calls (and the background task) share one refresh in flight. The
        last-known-good settings stay in ``current`` whatever happens.

        Raises:
            VaultError: The vault could not be read (the failure is also in :attr:`health`).
            SettingsValidationError: A new value does not validate and nothing else changed: it
                was not published (it is in ``health.issues``). When other secrets changed too,
                they are published and the event is returned.
            ClosedError: The live settings are not running.
        """
        if self._state != "running":
            raise ClosedError(f"{self!r} is not running")
        task = self._inflight
        if task is None or task.done():
            task = asyncio.create_task(self._serialised(self._refresh_once))
            task.add_done_callback(_retrieve)
            self._inflight = task
        # Shielded: a caller giving up must not cancel the refresh others share.
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                # aclose() cancelled the shared refresh, not this caller.
                raise ClosedError(f"{self!r} was closed during the refresh") from None
            raise

    def changes(self) -> ChangeStream:
        """An async iterator over the change events published from now on (one per generation)."""
        stream = ChangeStream()
        if self._state == "closed":
            stream._close()
        else:
            self._streams.add(stream)
        return stream

    # -- push refresh: notify() ----------------------------------------------------------------
    # One PushScheduler (kvconfig._refresh._push) per vault watched, owned by this watcher:
    # entered after the initial load, closed (timer task cancelled and awaited) by aclose(). Each
    # asks `_tracked` which version of a name is held in its vault and calls `_reread` for the
    # names to GET, which goes through `_refresh_names` (serialised with the poll).

    def notify(self, events: Any) -> NotifyResult:
        """Take Key Vault change events; re-read what they announce, shortly. Never does I/O.

        ``events`` is what an Event Grid webhook, a Service Bus or Storage queue message, or
        ``azure-eventgrid`` / ``cloudevents`` objects carry: an Event Grid body (JSON list), a
        CloudEvent or a batch, as bytes, str, dicts or event objects. Events for vaults not
        watched, untracked secrets and versions already held are ignored. For a newer version of
        a tracked secret, one targeted re-read is scheduled after a random delay in
        ``[0, notify_max_delay]`` (repeats coalesce), then validated and published as any
        refresh. ``SecretNearExpiry`` / ``SecretExpired`` are logged and shown in
        :attr:`health`. Safe to call from any thread; after :meth:`aclose` events are ignored.

        Returns:
            What was scheduled and ignored (from another thread: an empty result, the decision
            is taken on the watcher's loop).

        Raises:
            EventFormatError: ``events`` is not an event or a list of events (the message never
                repeats the body).
            ClosedError: The live settings were never started (``async with`` not entered).
        """
        from kvconfig._refresh._push import NotifyResult, parse_events

        pushes = list(self._pushes.values())
        if not pushes:
            if self._state == "closed":
                return NotifyResult(ignored=len(parse_events(events)))
            raise ClosedError(f"{self!r} is not running: enter `async with` before notify()")
        if len(pushes) == 1:
            return pushes[0].notify(events)
        parsed = parse_events(events)  # once; each scheduler keeps its own vault's events
        results = [push.notify(parsed) for push in pushes]
        if threading.get_ident() != self._loop_thread:
            return NotifyResult()  # decided on the watcher's loop
        taken = sum(len(parsed) - r.ignored for r in results)  # each event names one vault
        return NotifyResult(
            frozenset().union(*(r.scheduled for r in results)),
            max(0, len(parsed) - taken),
            sum(r.expiry for r in results),
        )

    @property
    def notify_max_delay(self) -> float:
        """Most seconds between a ``notify()`` and the re-read it causes."""
        return self._notify_max_delay

    async def _start_push(self) -> None:
        from kvconfig._refresh._push import PushScheduler

        assert self._detector is not None
        self._loop_thread = threading.get_ident()
        for url in self._detector.vaults or (self._vault.vault_url,):
            push = PushScheduler(
                url,
                tracked=functools.partial(self._tracked, url),
                reread=self._reread,
                notify_max_delay=self._notify_max_delay,
            )
            await push.__aenter__()
            self._pushes[url] = push

    async def _close_push(self) -> None:
        pushes, self._pushes = list(self._pushes.values()), {}
        for push in pushes:
            await push.aclose()  # cancels and awaits its timer task (and a re-read)

    def _tracked(self, vault_url: str, name: str) -> str | None:
        """The version held for a watched secret of ``vault_url`` ("" if none), ``None`` if it
        is not watched there."""
        if self._state != "running":
            return None
        held = self._held_versions()
        key = (vault_url, name.lower())
        if key not in held:
            return None
        return held[key] or ""

    async def _reread(self, names: set[str]) -> None:
        """The scheduler's re-read: GET ``names`` and publish, serialised with the poll."""
        if self._state != "running":
            return
        await self._serialised(lambda: self._refresh_names(names))

    async def _serialised(
        self, refresh: Callable[[], Awaitable[ChangeEvent | None]]
    ) -> ChangeEvent | None:
        """Run one refresh at a time: a poll and a targeted re-read never interleave (a slower
        one could otherwise publish an older observation over a newer one)."""
        async with self._serial:
            return await refresh()

    def _push_share_health(self) -> dict[str, Any]:
        """The push and shared_dir fields of :class:`Health`."""
        fields: dict[str, Any] = {"shared_role": None if self._share is None else self._share.role}
        if not self._pushes:
            return fields
        held = self._held_versions()
        near: list[str] = []
        expired: list[str] = []
        for url, push in self._pushes.items():
            for key, notice in sorted(push.expiry.items()):
                version = held.get((url, key), "missing")
                # A notice about a version no longer held (rotated since) is no longer news.
                if version != "missing" and notice.version in ("", (version or "").lower()):
                    (expired if notice.kind == "expired" else near).append(notice.name)
        fields.update(
            near_expiry=tuple(near),
            expired=tuple(expired),
            push_rereads=sum(push.rereads for push in self._pushes.values()),
            push_pending=sum(len(push.pending) for push in self._pushes.values()),
        )
        return fields

    def _held_versions(self) -> dict[tuple[str, str], str | None]:
        """(vault URL, lower-cased name) -> version held, for every watched unpinned secret."""
        detector = self._detector
        if detector is None:
            return {}
        return {
            (url, name): secret.version
            for (url, name, pin), secret in detector.held.items()
            if pin is None
        }

    # -- one refresher per host: shared_dir ----------------------------------------------------
    # A HostShare (kvconfig._refresh._hostshare), entered before the initial load. Each interval
    # `_tick` runs its contract: a follower tries to lead, then GETs only the names the leader's
    # notices report (or detects on its own when the share says None); the leader (or a solo
    # process) detects as without shared_dir and publishes what changed after every pass.

    async def _open_share(self) -> None:
        if self._shared_dir is None:
            return
        from urllib.parse import urlsplit

        from kvconfig._refresh._hostshare import HostShare

        url = urlsplit(self._vault.vault_url)
        cls = self._settings_cls
        key = f"{url.scheme.lower()}://{url.netloc.lower()}|{cls.__module__}.{cls.__qualname__}"
        share = HostShare(self._shared_dir, key, interval=self._interval)
        await share.__aenter__()
        self._share = share

    async def _close_share(self) -> None:
        share, self._share = self._share, None
        if share is not None:
            await share.aclose()

    async def _tick(self) -> None:
        """One interval of the background task: a poll, or the shared_dir contract."""
        share = self._share
        if share is None:
            await self.refresh()
            return
        if share.role == "follower":
            await share.try_lead()
        if share.role == "follower" and not self._share_resync:
            names = await share.poll()
            if names is not None:
                await self._follow(names)
                return
        self._share_resync = False
        await self.refresh()
        if share.role == "leader":
            # After every successful pass (the heartbeat): what changed since the last publish,
            # including what notify() or refresh() published meanwhile. A failed pass publishes
            # nothing: followers detect on their own once the heartbeat is stale.
            await share.publish(self._share_changes())
        else:
            self._share_sent = self._held_versions()

    async def _follow(self, names: set[str]) -> None:
        """A follower's interval: GET only what the refresher reported (no request if nothing).

        Either way this process's view of the vault is as fresh as the refresher's last pass
        (its heartbeat), not now: while the refresher's passes fail, ``health.fresh`` turns
        false here after ``max_staleness`` too, as it does on the refresher.
        """
        assert self._share is not None
        as_of = self._share.heartbeat
        if not names:
            self._record_success(as_of=as_of)  # the refresher vouches that nothing changed
            return
        try:
            await self._serialised(lambda: self._refresh_names(names, as_of=as_of))
        except Exception:
            self._share_resync = True  # the names were consumed: detect on our own next time
            raise
        self._share_sent = self._held_versions()

    def _share_changes(self) -> list[SecretChange]:
        """Changes of held versions since the last publish, by name (never a value)."""
        detector = self._detector
        assert detector is not None
        held = detector.held
        now = self._held_versions()
        changes: list[SecretChange] = []
        for (url, name), version in now.items():
            before = self._share_sent.get((url, name))
            if version != before:
                secret = held.get((url, name, None))
                updated = secret.updated if secret is not None else None
                label = secret.name if secret is not None and secret.name else name
                changes.append(SecretChange(label, before, version, None, updated, url))
        self._share_sent = now
        return changes

    # -- the background task -------------------------------------------------------------------

    async def _run(self) -> None:
        """Refresh forever. Never dies of an error (each is recorded and logged by the refresh)."""
        delay = self._next_delay()
        while True:
            await asyncio.sleep(delay)
            try:
                await self._tick()
            except ClosedError:
                if self._vault.closed:
                    logger.warning(
                        "vault %s was closed; stopped refreshing %s",
                        self._vault.vault_url,
                        self._settings_cls.__name__,
                    )
                    return
                delay = self._next_delay()
            except Exception as exc:
                delay = self._failure_delay(exc)
            else:
                delay = self._next_delay()

    def _next_delay(self) -> float:
        """The interval minus up to 10 %, shortened to check secrets about to expire or become
        valid. Never longer than the interval: a change is picked up within one interval."""
        delay = self._interval * random.uniform(0.9, 1.0)
        if self._detector is not None:
            lead = min(_EXPIRY_LEAD_MAX, 0.1 * self._interval)
            check = self._detector.next_check_in(lead)
            if check is not None:
                delay = min(delay, check)
        return delay

    def _failure_delay(self, exc: Exception) -> float:
        """Backoff after a failed refresh: transient -> exponential, full jitter, capped by the
        interval, at least the server's ``Retry-After``; anything else -> the next interval."""
        if not isinstance(exc, VaultUnavailableError):
            return self._next_delay()
        policy = self._vault.retry_policy
        return policy.delay(max(self._consecutive_failures, 1), exc.retry_after, cap=self._interval)

    # -- one refresh ---------------------------------------------------------------------------

    async def _refresh_once(self) -> ChangeEvent | None:
        """One poll: detect what changed (list pass and/or GETs), then :meth:`_apply` it."""
        detector = self._detector
        assert detector is not None
        names = [ref.name for ref in self._plan.refs]
        return await self._detect_and_apply(names, lambda timeout: detector.detect(timeout=timeout))

    async def _refresh_names(
        self, names: Iterable[str], *, as_of: float | None = None
    ) -> ChangeEvent | None:
        """Re-read the tracked secrets called ``names`` (case-insensitive; others ignored) and
        publish what changed through the same validate-before-swap path as a poll. ``as_of``:
        see :meth:`_record_success`."""
        detector = self._detector
        assert detector is not None
        names = list(names)
        return await self._detect_and_apply(
            names, lambda timeout: detector.detect_names(names, timeout=timeout), as_of=as_of
        )

    async def _detect_and_apply(
        self,
        names: list[str],
        detect: Callable[[float], Awaitable[RoutedDetection]],
        *,
        as_of: float | None = None,
    ) -> ChangeEvent | None:
        """The one refresh path of a poll and a targeted re-read: detect within the refresh
        budget, then :meth:`_apply`; one ``kvconfig.refresh`` span over both."""
        detector = self._detector
        assert detector is not None
        started = time.perf_counter()
        self._refreshes += 1
        with telemetry.refresh(self._settings_cls.__name__, self._vault.vault_url, names) as span:
            try:
                if self._vault.closed:
                    raise ClosedError(f"{self._vault!r} is closed")
                detection = await detect(self._refresh_timeout())
            except Exception as exc:
                self._record_failure(exc)
                raise
            span.requests = detection.requests  # telemetry hook
            try:
                event = self._apply(detection, started, as_of=as_of)
            finally:
                span.degraded = bool(detector.issues())  # telemetry hook
            span.outcome = "changed" if event is not None else "unchanged"  # telemetry hook
        return event

    def _refresh_timeout(self) -> float:
        """One refresh's budget: an interval, never more than ``startup_timeout``."""
        assert self._detector is not None
        return min(self._detector.startup_timeout, self._interval)

    def _apply(
        self, detection: RoutedDetection, started: float, *, as_of: float | None = None
    ) -> ChangeEvent | None:
        """Apply the policies to a detection; validate the complete new Settings; publish it if
        a field changed. Never awaits: nothing can interleave between validation and the swap.
        Callbacks are queued for the dispatcher, never run here.

        One bad secret does not hold back the others: when the new Settings does not validate,
        the changed secrets behind the failing locations keep their last-known-good version and
        the rest is validated again (and published if it validates). The bad ones are reported
        in ``health.issues``, proposed again at the next refresh, and logged once per version.
        If nothing could be published, :class:`SettingsValidationError` is raised, as before.
        """
        detector = self._detector
        assert detector is not None
        event: ChangeEvent | None = None
        rejected: dict[str, str] = {}
        rejection: SettingsValidationError | None = None
        try:
            proposal = detector.propose(detection)
            new: SettingsT | None = None
            while proposal.changes:  # each pass leaves out at least one change
                try:
                    # Validate the complete new Settings before anything is published.
                    new = self._vault.build(
                        self._settings_cls,
                        self._plan,
                        proposal.held,
                        self._init_kwargs,
                        references=proposal.references,
                    )
                    break
                except SettingsValidationError as exc:
                    rejection = exc
                    bad = self._at_fault(exc, proposal)
                    rejected.update(bad)
                    proposal = detector.without(proposal, bad)
            if new is not None:
                fields = changed_fields(self.current, new)
                detector.commit(proposal, rejected)
                if fields:
                    event = self._publish(new, fields, proposal.changes)
            else:
                detector.commit(proposal, rejected)
            detector.warn_expired()
        except Exception as exc:
            self._record_failure(exc)
            raise
        self._record_success(as_of=as_of)
        if rejection is not None:
            self._record_rejection(rejection, rejected, published=event is not None)
        self._log_refresh(proposal.changes, event, detection.requests, detection.mode, started)
        if event is not None and self._on_change is not None:
            self._pending.put_nowait(event)
        if rejection is not None and event is None:
            raise rejection  # nothing else to publish: the caller learns why, as before
        return event

    def _at_fault(self, exc: SettingsValidationError, proposal: RoutedProposal) -> dict[str, str]:
        """The changed secrets (lower-cased name -> why) behind ``exc``'s failing locations.

        Without a location that points at one (a parse error, a cross-field validator), each
        change is validated alone against the published secrets; if none fails alone, all are
        at fault together."""
        changed = {change.name.lower(): change for change in proposal.changes}
        reasons: dict[str, list[str]] = {}
        for error in exc.errors:
            raw = error.get("loc", ())
            loc = tuple(raw) if isinstance(raw, tuple | list) else ()
            where = ".".join(str(part) for part in loc) or self._settings_cls.__name__
            line = f"{where}: {error.get('msg', 'invalid')}"
            for planned in self._plan.secrets_for_location(loc):
                # Any name of its chain (prefixes, fallback vaults) may be the one that changed.
                for name in {c.ref.name.lower() for c in chain(planned)} & changed.keys():
                    if line not in reasons.setdefault(name, []):
                        reasons[name].append(line)
        if not reasons and len(changed) > 1:
            detector = self._detector
            assert detector is not None
            for name in changed:
                alone = detector.without(proposal, [n for n in changed if n != name])
                try:
                    self._vault.build(
                        self._settings_cls,
                        self._plan,
                        alone.held,
                        self._init_kwargs,
                        references=alone.references,
                    )
                except SettingsValidationError as own:
                    reasons[name] = [_first_line(own)]
        if not reasons:
            reasons = {name: [_first_line(exc)] for name in changed}
        return {
            name: (
                f"version {changed[name].new_version} of secret {changed[name].name} in "
                f"{changed[name].vault_url or self._vault.vault_url} does not validate "
                f"({'; '.join(lines)}); keeping "
                f"version {changed[name].old_version}"
            )
            for name, lines in reasons.items()
        }

    def _publish(
        self, new: SettingsT, fields: tuple[str, ...], secrets: tuple[SecretChange, ...]
    ) -> ChangeEvent:
        self._generation += 1
        event = ChangeEvent(self._generation, fields, secrets, datetime.now(UTC))
        self.current = new  # the one assignment readers can observe
        for stream in list(self._streams):
            stream._push(event)
        return event

    async def _dispatch(self) -> None:
        """Run ``on_change`` for each published event (in generation order) and
        ``on_refresh_error`` for each failure, in the order they happened, outside any refresh.

        A callback may await ``live.refresh()``. One that is still running after
        ``on_change_timeout`` seconds is cancelled and logged; the next one goes on.
        """
        name = self._settings_cls.__name__
        while True:
            item = await self._pending.get()
            call: Callable[[], Awaitable[None] | None]
            if isinstance(item, ChangeEvent):
                if self._on_change is None:
                    continue
                call = functools.partial(self._on_change, item)
                what = f"on_change callback for {name} generation {item.generation}"
            else:
                self._errors_pending -= 1
                if self._on_refresh_error is None:
                    continue
                call = functools.partial(self._on_refresh_error, item)
                what = f"on_refresh_error callback for {name} ({type(item).__name__})"
            try:
                async with asyncio.timeout(self._on_change_timeout):
                    result = call()
                    if inspect.isawaitable(result):
                        await result
            except TimeoutError:
                logger.error(
                    "%s still running after %gs; abandoned (cancelled), refreshing goes on",
                    what,
                    self._on_change_timeout,
                )
            except Exception as exc:
                logger.error("%s failed: %s\n%s", what, type(exc).__name__, _stack(exc))

    def _report_error(self, exc: Exception) -> None:
        """Queue ``exc`` (value-free) for ``on_refresh_error``; dropped when the callback is
        more than a few errors behind (health still has the latest)."""
        if self._on_refresh_error is None or self._state == "closed":
            return
        if self._errors_pending >= _ERRORS_PENDING_MAX:
            return
        self._errors_pending += 1
        self._pending.put_nowait(_value_free(exc, self._settings_cls.__name__, self._vault))

    def _record_rejection(
        self, exc: SettingsValidationError, rejected: dict[str, str], *, published: bool
    ) -> None:
        """New versions were left out because they do not validate: say so once per version."""
        self._last_error = f"{type(exc).__name__}: {exc}"
        detector = self._detector
        assert detector is not None
        versions = {
            issue.secret.lower(): issue.version
            for issue in detector.issues()
            if issue.kind == "rejected" and issue.secret is not None
        }
        fresh = [
            (name, why)
            for name, why in rejected.items()
            if (name, versions.get(name)) not in self._rejections_logged
        ]
        for name, why in fresh:
            self._rejections_logged.add((name, versions.get(name)))
            logger.warning(
                "refresh of %s rejected a new value: %s; %s, still serving generation %d",
                self._settings_cls.__name__,
                why,
                "the other changes were published" if published else "nothing else changed",
                self._generation,
            )
        self._report_error(exc)

    @property
    def _where(self) -> str:
        """The vault(s) watched, for log lines."""
        vaults = self._detector.vaults if self._detector is not None else ()
        return ", ".join(vaults) if vaults else self._vault.vault_url

    def _record_success(self, *, as_of: float | None = None) -> None:
        """A refresh succeeded. ``as_of`` (``time.time()``): the view it gave is only as fresh
        as that (a follower's: the refresher's last pass); ``last_success`` never goes back."""
        if self._consecutive_failures:
            logger.info(
                "refresh of %s from %s recovered after %d failed attempt(s)",
                self._settings_cls.__name__,
                self._where,
                self._consecutive_failures,
            )
        self._consecutive_failures = 0
        now = time.monotonic()
        age = 0.0 if as_of is None else max(0.0, time.time() - as_of)
        if now - age >= self._last_success_at:
            self._last_success_at = now - age
            self._last_success = datetime.now(UTC) - timedelta(seconds=age)

    def _record_failure(self, exc: Exception) -> None:
        self._report_error(exc)
        self._failures += 1
        self._consecutive_failures += 1
        count = self._consecutive_failures
        name = self._settings_cls.__name__
        url = self._where
        if isinstance(exc, KvConfigError):
            # kvconfig's messages name fields, secrets and the vault, never values.
            self._last_error = f"{type(exc).__name__}: {exc}"
        else:
            self._last_error = type(exc).__name__  # its message could hold anything
        if isinstance(exc, SettingsValidationError):
            logger.warning(
                "refresh of %s from %s rejected: the new values do not validate; still serving "
                "generation %d. %s",
                name,
                url,
                self._generation,
                exc,
            )
        elif isinstance(exc, KvConfigError):
            if count & (count - 1) == 0:  # 1st, 2nd, 4th, 8th... failure in a row
                logger.warning(
                    "refresh of %s from %s failed (%d in a row); still serving generation %d: %s",
                    name,
                    url,
                    count,
                    self._generation,
                    exc,
                )
        else:
            logger.error(
                "refresh of %s from %s failed unexpectedly (%s); still serving generation %d\n%s",
                name,
                url,
                type(exc).__name__,
                self._generation,
                _stack(exc),
            )

    def _log_refresh(
        self,
        changes: tuple[SecretChange, ...],
        event: ChangeEvent | None,
        requests: int,
        mode: str,
        started: float,
    ) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        if logger.isEnabledFor(logging.DEBUG):
            for change in changes:
                logger.debug(
                    "secret %s: version %s -> %s",
                    change.name,
                    change.old_version,
                    change.new_version,
                )
        if event is not None:
            logger.info(
                "refreshed %s from %s: generation %d, %d secret(s) and %d field(s) changed, "
                "%d request(s) (%s mode), %.1f ms",
                self._settings_cls.__name__,
                self._where,
                event.generation,
                len(event.secrets),
                len(event.fields),
                requests,
                mode,
                elapsed_ms,
            )
        else:
            # One INFO line per refresh, changed or not: operators see the poll is alive.
            logger.info(
                "refreshed %s from %s: generation %d kept, %s, %d request(s) (%s mode), %.1f ms",
                self._settings_cls.__name__,
                self._where,
                self._generation,
                f"{len(changes)} secret(s) changed, no value" if changes else "no change",
                requests,
                mode,
                elapsed_ms,
            )


def _retrieve(task: asyncio.Task[ChangeEvent | None]) -> None:
    # The background loop or a refresh() caller normally gets the outcome; if all of them were
    # cancelled, mark it retrieved so asyncio does not log "exception was never retrieved".
    if not task.cancelled():
        task.exception()


def _value_free(exc: Exception, settings: str, vault: VaultLink) -> KvConfigError:
    """What ``on_refresh_error`` receives: kvconfig's error without its chain (``__context__``
    may hold an SDK exception quoting a response body) or traceback; anything else replaced by a
    :class:`~kvconfig.KvConfigError` naming only its type (its message could hold anything)."""
    if isinstance(exc, KvConfigError):
        clone = type(exc).__new__(type(exc), *exc.args)
        clone.__dict__.update(exc.__dict__)
        return clone
    return KvConfigError(
        f"refresh of {settings} from {vault.vault_url} failed unexpectedly "
        f"({type(exc).__name__}; the traceback is in kvconfig's log)"
    )


def _first_line(exc: SettingsValidationError) -> str:
    """The first error line of a validation error's message (kvconfig's: no value)."""
    lines = str(exc).splitlines()
    return lines[1].strip() if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)


def _stack(exc: BaseException) -> str:
    """The traceback's frames without the exception message (which could quote a value)."""
    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()
