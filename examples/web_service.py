"""An aiohttp web service whose settings follow the vault: ``vault.watch()`` in practice.

- The settings are loaded in the app's cleanup context (``app.cleanup_ctx``): the service does
  not start serving before they validate, and the watcher and the vault are closed on shutdown.
- A background task refreshes them every ``interval`` seconds; a rotated secret is picked up
  without a restart, and an invalid new value is never published.
- Each request reads ``live.current``: a plain attribute, no I/O, no lock.
- ``GET /health`` answers 200 while the settings are fresh (``max_staleness``) and 503 after,
  for a readiness probe. It shows versions and times, never a value.

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
    """Readiness: 200 while fresh, 503 once stale; versions and times only."""
    state = request.app[LIVE].health
    body = {
        "healthy": state.healthy,
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
    return web.json_response(body, status=200 if state.healthy else 503)


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
