"""Sync access to the async core: a private event loop thread, ``SyncKeyVault`` and its live object.

Every sync API runs kvconfig's async core on a private event loop on a worker thread
(:class:`LoopThread`), so it works whether or not the caller's thread runs a loop (Jupyter,
an async framework's sync hook) and from several threads at once. A caller blocks only for the
work it asked for; background refresh runs on the private loop.

Sync credentials (``azure.identity.DefaultAzureCredential()``) are adapted to the aio SDK by
``KeyVault`` itself (:mod:`kvconfig._credentials`): ``get_token`` runs in a thread.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
import traceback
import weakref
from collections.abc import Callable, Coroutine
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from pydantic_settings import BaseSettings

from kvconfig._errors import ClosedError, KvConfigError
from kvconfig._vault import KeyVault

if TYPE_CHECKING:
    from kvconfig._names import SettingsPlan
    from kvconfig._refresh._detect import NotYetValid, OnMissing
    from kvconfig._refresh._events import ChangeEvent
    from kvconfig._refresh._health import Health
    from kvconfig._refresh._push import NotifyResult
    from kvconfig._refresh._watch import LiveSettings

__all__ = ["LoopThread", "SyncKeyVault", "SyncLiveSettings"]

logger = logging.getLogger("kvconfig")

T = TypeVar("T")
SettingsT = TypeVar("SettingsT", bound=BaseSettings)

SyncChangeCallback = Callable[["ChangeEvent"], object]
SyncErrorCallback = Callable[["KvConfigError"], object]


class LoopThread:
    """An event loop on its own (non-daemon) thread; :meth:`run` submits coroutines to it.

    :meth:`close` stops the loop (after cancelling what still runs, shutting down its default
    executor and async generators) and joins the thread. Idempotent.
    """

    def __init__(self, name: str = "kvconfig-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._lock = threading.Lock()
        # A daemon thread, so a SyncKeyVault left open cannot hang interpreter exit; the atexit
        # hook below closes those properly while the thread still runs.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private loop (for ``call_soon_threadsafe``)."""
        return self._loop

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and wait for its result (or exception)."""
        with self._lock:
            if self._closed:
                coro.close()
                raise ClosedError("the private event loop is closed")
            if threading.current_thread() is self._thread:
                coro.close()
                raise RuntimeError("a sync kvconfig API was called from its own loop thread")
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # KeyboardInterrupt in the caller: do not leave the work running
            raise

    def close(self) -> None:
        """Stop the loop and join its thread. Idempotent; safe from any thread but the loop's."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one coroutine on a fresh private loop thread, then stop and join it."""
    thread = LoopThread("kvconfig-load")
    try:
        return thread.run(factory())
    finally:
        thread.close()


class SyncKeyVault:
    """:class:`~kvconfig.KeyVault` for sync code: Django, Flask, Celery, scripts, notebooks.

    ::

        with SyncKeyVault(vault_url, DefaultAzureCredential()) as vault:
            settings = vault.load(Settings)
            live = vault.watch(Settings, interval=60)
            live.current            # any thread, no I/O

    ``credential`` may be sync (``azure.identity``) or async (``azure.identity.aio``). Options
    are :class:`~kvconfig.KeyVault`'s. The vault runs on a private event loop thread, created
    here and stopped (after closing the client, the session and the credential) by
    :meth:`close`; calls work from any thread, with or without a running loop in it.
    """

    def __init__(self, vault_url: str, credential: Any, **options: Any) -> None:
        # Validates the arguments (URL, CA file, credential, ...) before a thread exists.
        self._vault = KeyVault(vault_url, credential, **options)
        self._thread = LoopThread("kvconfig-sync")
        self._lives: list[SyncLiveSettings[Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        _OPEN.add(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SyncKeyVault({self._vault.vault_url!r})"

    @property
    def vault_url(self) -> str:
        """The vault's URL (no trailing slash)."""
        return self._vault.vault_url

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")

    def plan(self, settings_cls: type[BaseSettings]) -> SettingsPlan:
        """Which secrets :meth:`load` would request (no I/O)."""
        return self._vault.plan(settings_cls)

    def load(self, settings_cls: type[SettingsT], /, **init_kwargs: Any) -> SettingsT:
        """As :meth:`kvconfig.KeyVault.load`, blocking until the instance is built."""
        self._check()
        return self._thread.run(self._vault.load(settings_cls, **init_kwargs))

    def watch(
        self,
        settings_cls: type[SettingsT],
        /,
        *,
        interval: float | timedelta = 60.0,
        max_staleness: float | timedelta | None = None,
        on_missing: OnMissing = "keep",
        not_yet_valid: NotYetValid = "ignore",
        on_change: SyncChangeCallback | None = None,
        clock_skew: float | timedelta = 1.0,
        on_refresh_error: SyncErrorCallback | None = None,
        notify_max_delay: float | timedelta = 30.0,
        shared_dir: str | os.PathLike[str] | None = None,
        **init_kwargs: Any,
    ) -> SyncLiveSettings[SettingsT]:
        """Load ``settings_cls`` and keep it fresh in the background: a :class:`SyncLiveSettings`.

        Returns once the first load succeeded (same errors as :meth:`load`). ``on_change`` is
        called with each :class:`~kvconfig.ChangeEvent`, in order, on a dedicated callback thread
        (never on the loop, so a slow callback delays no refresh). ``on_refresh_error`` is
        called on that thread too, with each refresh failure's value-free
        :class:`~kvconfig.KvConfigError` (see :meth:`kvconfig.KeyVault.watch`). Closed by its
        own ``close()`` or by this vault's. ``notify_max_delay`` and ``shared_dir`` as for
        :meth:`kvconfig.KeyVault.watch`.
        """
        self._check()
        live = SyncLiveSettings[SettingsT](self._thread, on_change, on_refresh_error)
        inner = self._vault.watch(
            settings_cls,
            interval=interval,
            max_staleness=max_staleness,
            on_missing=on_missing,
            not_yet_valid=not_yet_valid,
            on_change=live._dispatch if on_change is not None else None,
            clock_skew=clock_skew,
            on_refresh_error=live._dispatch_error if on_refresh_error is not None else None,
            notify_max_delay=notify_max_delay,
            shared_dir=shared_dir,
            **init_kwargs,
        )
        try:
            live._start(inner)
        except BaseException:
            live.close()
            raise
        with self._lock:
            self._lives.append(live)
        return live

    def close(self) -> None:
        """Stop every live object, close the vault, stop the loop thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            lives, self._lives = self._lives, []
        try:
            for live in lives:
                live.close()
            self._thread.run(self._vault.aclose())
        finally:
            self._thread.close()


_OPEN: weakref.WeakSet[SyncKeyVault] = weakref.WeakSet()


@atexit.register
def _close_open_vaults() -> None:
    """Close what the program left open (client, session, credential, loop thread) at exit."""
    for vault in list(_OPEN):
        try:
            vault.close()
        except Exception:  # exiting anyway: report, do not mask the exit
            logger.warning("closing %r at exit failed", vault, exc_info=True)


class SyncLiveSettings(Generic[SettingsT]):
    """A live Settings object for sync code: see :meth:`SyncKeyVault.watch`.

    ``current`` is the latest validated instance: a plain attribute read, safe from any thread.
    ``refresh()`` refreshes now and returns the :class:`~kvconfig.ChangeEvent` (or ``None``);
    ``health`` is the :class:`~kvconfig.Health` snapshot. ``close()`` (or ``with``) stops the
    background refresh and the callback thread; ``current`` stays readable.
    """

    def __init__(
        self,
        thread: LoopThread,
        on_change: SyncChangeCallback | None,
        on_refresh_error: SyncErrorCallback | None = None,
    ) -> None:
        self._thread = thread
        self._on_change = on_change
        self._on_refresh_error = on_refresh_error
        self._live: LiveSettings[SettingsT] | None = None
        self._callbacks = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kvconfig-callback")
            if on_change is not None or on_refresh_error is not None
            else None
        )
        self._closed = False
        self._lock = threading.Lock()
        self._in_callback = threading.local()

    def _start(self, live: LiveSettings[SettingsT]) -> None:
        async def enter() -> None:
            await live.__aenter__()

        self._thread.run(enter())
        self._live = live

    async def _dispatch(self, event: ChangeEvent) -> None:
        """The async ``on_change`` handed to ``LiveSettings``: queue the call, never wait on it."""
        if self._callbacks is not None and self._on_change is not None:
            with contextlib.suppress(RuntimeError):  # shut down while closing
                self._callbacks.submit(self._call, self._on_change, event)

    async def _dispatch_error(self, error: KvConfigError) -> None:
        """The async ``on_refresh_error`` handed to ``LiveSettings``: queued, never waited on."""
        if self._callbacks is not None and self._on_refresh_error is not None:
            with contextlib.suppress(RuntimeError):  # shut down while closing
                self._callbacks.submit(self._call_error, self._on_refresh_error, error)

    def _call(self, callback: SyncChangeCallback, event: ChangeEvent) -> None:
        self._in_callback.active = True
        try:
            callback(event)
        except Exception:
            logger.exception("on_change callback failed for generation %d", event.generation)
        finally:
            self._in_callback.active = False

    def _call_error(self, callback: SyncErrorCallback, error: KvConfigError) -> None:
        self._in_callback.active = True
        try:
            callback(error)
        except Exception as exc:  # its message could quote anything: type and frames only
            logger.error(
                "on_refresh_error callback failed: %s\n%s",
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
            )
        finally:
            self._in_callback.active = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SyncLiveSettings({self._live!r})"

    def _inner(self) -> LiveSettings[SettingsT]:
        if self._live is None:
            raise ClosedError("the live settings were never started")
        return self._live

    @property
    def current(self) -> SettingsT:
        """The latest validated Settings instance (no I/O, no lock)."""
        return self._inner().current

    @property
    def health(self) -> Health:
        """The :class:`~kvconfig.Health` snapshot: ``serving`` for readiness probes, ``fresh``
        and ``degraded`` for alerts (see :attr:`kvconfig.LiveSettings.health`)."""
        return self._inner().health

    @property
    def generation(self) -> int:
        """How many new configurations were published since the first load."""
        return self._inner().generation

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def refresh(self) -> ChangeEvent | None:
        """Refresh now (blocking): the :class:`~kvconfig.ChangeEvent`, or ``None`` if unchanged."""
        if self._closed:
            raise ClosedError(f"{self!r} is closed")
        return self._thread.run(self._inner().refresh())

    def notify(self, events: Any) -> NotifyResult:
        """As :meth:`kvconfig.LiveSettings.notify`; callable from any thread, never blocks on
        the loop thread (the decision is handed to it). After :meth:`close`, events are
        ignored."""
        if self._closed:
            from kvconfig._refresh._push import NotifyResult, parse_events

            return NotifyResult(ignored=len(parse_events(events)))
        return self._inner().notify(events)

    def close(self) -> None:
        """Stop the background refresh, then the callback thread (queued calls run). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._live is not None and not self._thread.closed:
                self._thread.run(self._live.aclose())
        finally:
            if self._callbacks is not None:
                # From inside a callback, waiting for the callback thread would wait for itself.
                inside = getattr(self._in_callback, "active", False)
                self._callbacks.shutdown(wait=not inside)
