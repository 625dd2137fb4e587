"""Run a KeyVaultEmulator on a background thread, for sync code (scripts, the sync SDK)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from kvconfig.emulator._emulator import KeyVaultEmulator

__all__ = ["EmulatorThread"]

T = TypeVar("T")


class EmulatorThread:
    """A sync context manager serving a :class:`KeyVaultEmulator` from its own event loop thread.

    Example::

        with EmulatorThread() as emu:
            os.environ.update(emu.environment())
            client = SecretClient(emu.vault_url, DefaultAzureCredential(),
                                  verify_challenge_resource=False)

    The emulator's direct store methods (``set_secret``, ``seed``, ...) are plain memory
    operations; call them between requests, or through :meth:`call` to run them on the
    emulator's thread.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready: Future[KeyVaultEmulator] = Future()

    def __repr__(self) -> str:
        return f"EmulatorThread(running={self._thread is not None})"

    def __enter__(self) -> KeyVaultEmulator:
        self._thread = threading.Thread(target=self._run, name="kvconfig-emulator", daemon=True)
        self._thread.start()
        return self._ready.result()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the emulator and join its thread. Idempotent."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        self._thread = None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the emulator's loop (e.g. ``emu.add_vault("x")``); wait for it."""
        assert self._loop is not None, "not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with KeyVaultEmulator(**self._kwargs) as emu:
                self._ready.set_result(emu)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise
