"""FastAPI / Starlette: load and watch a Settings class for the app's lifetime (extra ``fastapi``).

::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from kvconfig.integrations.fastapi import VaultSettings

    vault_settings = VaultSettings(AppSettings, vault_url=os.environ["VAULT_URL"], interval=60)
    app = FastAPI(lifespan=vault_settings.lifespan)
    app.include_router(vault_settings.health_router())          # GET /health
    Settings = Annotated[AppSettings, Depends(vault_settings.current)]

    @app.get("/")
    async def index(settings: Settings) -> dict[str, str]:    # typed: no type: ignore
        return {"greeting": settings.greeting}

- :meth:`VaultSettings.lifespan` opens the vault, loads the class (the app does not start
  serving before it validates: a failure fails startup with kvconfig's error), watches it in the
  background, and closes the watcher, the vault and the credential on shutdown.
- :meth:`VaultSettings.current` is the dependency: the latest validated Settings, a plain
  attribute read (no I/O). :meth:`VaultSettings.live` gives the :class:`~kvconfig.LiveSettings`.
- :meth:`VaultSettings.health_router` / :meth:`VaultSettings.health_response`: ``live.health``
  as JSON for a readiness probe: 200 while *serving* (a validated Settings is published, also
  through a vault outage), 503 before startup and after shutdown; ``fresh``, ``degraded`` and
  ``issues`` in the body for alerting. ``GET /health?strict=true`` answers 503 also when not
  fresh (for a monitor, not a readiness probe). Versions and times, never a value.

With several workers (``uvicorn --workers N``, gunicorn), each worker process runs the lifespan:
its own vault client and watcher, each refreshing every ``interval`` (the vault sees N watchers).

This module imports FastAPI (``health_router`` only) and Starlette, so it is imported only by
applications that use it: ``pip install 'kvconfig[fastapi]'``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic_settings import BaseSettings

try:
    from starlette.responses import JSONResponse
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "kvconfig.integrations.fastapi needs FastAPI: pip install 'kvconfig[fastapi]'"
    ) from exc

from kvconfig._errors import ClosedError
from kvconfig._refresh._watch import ErrorCallback, LiveSettings
from kvconfig._vault import KeyVault

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from fastapi import APIRouter

__all__ = ["VaultSettings"]

SettingsT = TypeVar("SettingsT", bound=BaseSettings)

_log = logging.getLogger("kvconfig.integrations.fastapi")


class VaultSettings(Generic[SettingsT]):
    """One Settings class loaded from one vault and kept fresh for an app's lifetime.

    Args:
        settings_cls: The Settings class.
        vault_url: The vault, e.g. ``https://myvault.vault.azure.net``.
        credential: A callable building the async credential at startup (it is closed at
            shutdown); default ``azure.identity.aio.DefaultAzureCredential``.
        interval: Seconds (or ``timedelta``) between refreshes, as for
            :meth:`~kvconfig.KeyVault.watch`.
        on_refresh_error: Called (and awaited, if async) with each failed refresh's value-free
            :class:`~kvconfig.KvConfigError` and each rejected value, as for
            :meth:`~kvconfig.KeyVault.watch` (report it to your error tracker).
        watch_options: Other keyword arguments of :meth:`~kvconfig.KeyVault.watch`
            (``max_staleness``, ``on_change``, ``on_missing``, ...).
        **vault_options: Keyword arguments of :class:`~kvconfig.KeyVault` (``ca_file``,
            ``prefix``, ``startup_timeout``, ...).
    """

    def __init__(
        self,
        settings_cls: type[SettingsT],
        *,
        vault_url: str,
        credential: Callable[[], AsyncTokenCredential] | None = None,
        interval: float | timedelta = 60.0,
        on_refresh_error: ErrorCallback | None = None,
        watch_options: dict[str, Any] | None = None,
        **vault_options: Any,
    ) -> None:
        self._settings_cls = settings_cls
        self._vault_url = vault_url
        self._credential = credential
        self._interval = interval
        self._watch_options = dict(watch_options or {})
        if on_refresh_error is not None:
            self._watch_options["on_refresh_error"] = on_refresh_error
        self._vault_options = vault_options
        self._live: LiveSettings[SettingsT] | None = None

    def __repr__(self) -> str:
        state = "running" if self._live is not None else "stopped"
        return f"VaultSettings({self._settings_cls.__name__}, {self._vault_url!r}, {state})"

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """The app's lifespan (``FastAPI(lifespan=vault_settings.lifespan)``), or a part of
        yours: ``async with vault_settings.lifespan(app): yield``.

        Raises:
            KvConfigError: As :meth:`~kvconfig.KeyVault.watch` does on entering (the app then
                fails to start).
        """
        if self._live is not None:
            raise RuntimeError(f"{self!r} is already running (one lifespan at a time)")
        credential = self._make_credential()
        vault = KeyVault(self._vault_url, credential, **self._vault_options)
        async with (
            vault,
            vault.watch(self._settings_cls, interval=self._interval, **self._watch_options) as live,
        ):
            self._live = live
            _log.info(
                "serving %s from %s (generation %d), refreshing every %ss",
                self._settings_cls.__name__,
                vault.vault_url,
                live.generation,
                live.interval,
            )
            try:
                yield
            finally:
                self._live = None
        _log.info("closed %s watcher and vault %s", self._settings_cls.__name__, vault.vault_url)

    def _make_credential(self) -> AsyncTokenCredential:
        if self._credential is not None:
            return self._credential()
        from azure.identity.aio import DefaultAzureCredential

        return DefaultAzureCredential()

    def live(self) -> LiveSettings[SettingsT]:
        """The running :class:`~kvconfig.LiveSettings` (a dependency too).

        Raises:
            ClosedError: Outside the lifespan (not started yet, or shut down).
        """
        if self._live is None:
            raise ClosedError(
                f"{self._settings_cls.__name__} settings are not loaded: the app's lifespan "
                "is not running (pass lifespan=vault_settings.lifespan to the app)"
            )
        return self._live

    def current(self) -> SettingsT:
        """The latest validated Settings: the dependency (``Depends(vault_settings.current)``).

        Raises:
            ClosedError: Outside the lifespan.
        """
        return self.live().current

    def health_response(self, strict: bool = False) -> JSONResponse:
        """``live.health`` as JSON, for a readiness probe: 200 while ``serving`` (also when
        the vault is down and the last-known-good is served), 503 outside the lifespan.

        ``fresh``, ``degraded`` and ``issues`` are in the body for alerting. With ``strict``
        (``?strict=true`` on the route) it answers 503 also when not ``fresh``: for a monitor
        that pages, never for a readiness probe (a vault blip would take every replica out of
        rotation at once). Versions, counts and times only, never a value.
        """
        live = self._live
        if live is None:
            body = {"running": False, "serving": False, "fresh": False, "healthy": False}
            return JSONResponse(body, status_code=503)
        state = live.health
        body = {"running": True, **_jsonable(dataclasses.asdict(state))}
        ok = state.serving and (state.fresh or not strict)
        return JSONResponse(body, status_code=200 if ok else 503)

    def health_router(self, path: str = "/health") -> APIRouter:
        """A router serving :meth:`health_response` on ``GET path`` (outside the OpenAPI
        schema): ``app.include_router(vault_settings.health_router())``."""
        from fastapi import APIRouter

        router = APIRouter()
        router.add_api_route(
            path,
            self.health_response,
            methods=["GET"],
            include_in_schema=False,
            response_class=JSONResponse,
        )
        return router


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, float):
            value = round(value, 3)
        out[key] = value
    return out
