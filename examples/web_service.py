"""An aiohttp web service whose settings follow the vault: ``vault.watch()`` in practice.

- The settings are loaded in the app's cleanup context (``app.cleanup_ctx``): the service does
  not start serving before they validate, and the watcher and the vault are closed on shutdown.
- A background task refreshes them every ``interval`` seconds; a rotated secret is picked up
  without a restart, and an invalid new value is never published.
- Each request reads ``live.current``: a plain attribute, no I/O, no lock.
- ``GET /health`` is the readiness probe: 200 while a validated configuration is served
  (``health.serving``: also through a vault outage, on the last-known-good), with ``fresh``,
  ``degraded`` and ``issues`` in the body for alerting. ``GET /health?strict=true`` answers 503
  once the settings are older than ``max_staleness``: for a monitor, not for readiness (a vault
  blip would take every replica out of rotation at once). Versions and times, never a value.

Run against a real vault (credentials from ``DefaultAzureCredential``)::

    VAULT_URL=https://<name>.vault.azure.net python examples/web_service.py

or against a local vault, in the shell where ``eval "$(kvconfig emulator &)"`` exported
``VAULT_URL``, ``SSL_CERT_FILE`` and the managed-identity variables.

Optional environment: ``KVCONFIG_CA_FILE`` (extra CA, e.g. the emulator's),
``KVCONFIG_INTERVAL`` (seconds, default 60), ``PORT`` (default 8080). The vault needs the
secrets ``greeting`` and ``upstream-token``. Tests import :func:`create_app` and inject the
emulator's URL, credential and CA instead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from os import PathLike

from aiohttp import web
from azure.core.credentials_async import AsyncTokenCredential
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import KeyVault, LiveSettings


class ServiceSettings(BaseSettings):
    """What the service needs; each field is a secret of the same name (``_`` -> ``-``)."""

    model_config = SettingsConfigDict(env_prefix="WEB_SERVICE_")

    greeting: str = "hello"  # served to clients: rotating it is visible at once
    upstream_token: SecretStr  # used to call an upstream service; never served
    max_items: int = 10


LIVE = web.AppKey("live", LiveSettings[ServiceSettings])


def create_app(
    vault_url: str,
    credential_factory: Callable[[], AsyncTokenCredential],
    *,
    ca_file: str | PathLike[str] | None = None,
    interval: float = 60.0,
) -> web.Application:
    """The web application; the vault is opened when the app starts and closed when it stops.

    Args:
        vault_url: The vault.
        credential_factory: Builds the async credential (called at startup, closed at cleanup).
        ca_file: Extra CA to trust (the emulator's), if any.
        interval: Seconds between refreshes.
    """

    async def live_settings(app: web.Application) -> AsyncIterator[None]:
        vault = KeyVault(vault_url, credential_factory(), ca_file=ca_file)
        async with vault, vault.watch(ServiceSettings, interval=interval) as live:
            app[LIVE] = live
            yield

    app = web.Application()
    app.cleanup_ctx.append(live_settings)
    app.router.add_get("/", index)
    app.router.add_get("/health", health)
    return app


async def index(request: web.Request) -> web.Response:
    """Uses the current settings: one attribute read per request."""
    live = request.app[LIVE]
    settings = live.current
    return web.json_response(
        {
            "message": f"{settings.greeting}, world",
            "max_items": settings.max_items,
            "generation": live.generation,
        }
    )


async def health(request: web.Request) -> web.Response:
    """Readiness: 200 while serving; ``?strict=true``: 503 also once stale. No value shown."""
    state = request.app[LIVE].health
    body = {
        "serving": state.serving,  # readiness
        "fresh": state.fresh,  # alert (page) when false
        "degraded": state.degraded,  # alert (ticket) when true; issues say why
        "issues": [dataclasses.asdict(issue) for issue in state.issues],
        "healthy": state.healthy,  # serving and fresh
        "generation": state.generation,
        "last_success": state.last_success.isoformat(),
        "staleness_s": round(state.staleness, 3),
        "max_staleness_s": state.max_staleness,
        "last_error": state.last_error,
        "consecutive_failures": state.consecutive_failures,
        "refreshes": state.refreshes,
        "failures": state.failures,
        "mode": state.mode,
    }
    strict = request.query.get("strict", "").lower() in ("1", "true", "yes")
    ok = state.serving and (state.fresh or not strict)
    return web.json_response(body, status=200 if ok else 503)


def main() -> int:
    """Serve on 127.0.0.1:$PORT against $VAULT_URL."""
    vault_url = os.environ.get("VAULT_URL")
    if not vault_url:
        print("set VAULT_URL=https://<name>.vault.azure.net", file=sys.stderr)
        return 2
    from azure.identity.aio import DefaultAzureCredential

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every request at INFO
    app = create_app(
        vault_url,
        DefaultAzureCredential,
        ca_file=os.environ.get("KVCONFIG_CA_FILE") or None,
        interval=float(os.environ.get("KVCONFIG_INTERVAL", "60")),
    )
    web.run_app(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
