"""A FastAPI service whose settings follow the vault: ``kvconfig.integrations.fastapi``.

- ``VaultSettings.lifespan`` loads the settings before the app serves (a failure fails startup),
  refreshes them in the background and closes everything on shutdown.
- Handlers take ``Settings`` (``Annotated[ServiceSettings, Depends(...)]``): typed, no I/O.
- ``GET /health`` serves ``live.health`` for a readiness probe: 200 while a validated
  configuration is served (also through a vault outage), ``fresh`` / ``degraded`` / ``issues``
  in the body for alerts; ``GET /health?strict=true`` is 503 once stale. Never a value.
- Refresh failures and rejected values reach ``on_refresh_error`` (here: one log line; in a
  service, your error tracker), value-free.
- kvconfig's INFO lines (loads, rotations, refresh failures) are shown under uvicorn: uvicorn
  configures only its own loggers, so this module gives ``kvconfig`` a handler (see README).

Run (``pip install 'kvconfig[fastapi]' uvicorn``)::

    VAULT_URL=https://<name>.vault.azure.net uvicorn fastapi_service:app --app-dir examples
    uvicorn fastapi_service:app --app-dir examples --workers 2     # one watcher per worker

or against a local vault, in the shell where ``eval "$(kvconfig emulator &)"`` exported
``VAULT_URL``, ``SSL_CERT_FILE`` and the managed-identity variables. Optional environment:
``KVCONFIG_CA_FILE`` (extra CA, e.g. the emulator's), ``KVCONFIG_INTERVAL`` (seconds, default
60). The vault needs the secrets ``greeting`` and ``upstream-token``.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import KvConfigError, LiveSettings
from kvconfig.integrations.fastapi import VaultSettings


class ServiceSettings(BaseSettings):
    """What the service needs; each field is a secret of the same name (``_`` -> ``-``)."""

    model_config = SettingsConfigDict(env_prefix="FASTAPI_SERVICE_")

    greeting: str = "hello"  # served to clients: rotating it is visible at once
    upstream_token: SecretStr  # used to call an upstream service; never served
    max_items: int = 10


def _log_kvconfig_to_stderr() -> None:
    """uvicorn and gunicorn configure their own loggers only: give ``kvconfig`` a handler."""
    logger = logging.getLogger("kvconfig")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


_log_kvconfig_to_stderr()


def _report(error: KvConfigError) -> None:
    """on_refresh_error: kvconfig's error, never a value (send it to an error tracker)."""
    logging.getLogger("fastapi_service").warning("settings refresh: %s", error)


vault_settings = VaultSettings(
    ServiceSettings,
    vault_url=os.environ.get("VAULT_URL", ""),
    interval=float(os.environ.get("KVCONFIG_INTERVAL", "60")),
    on_refresh_error=_report,
    ca_file=os.environ.get("KVCONFIG_CA_FILE") or None,
)
Settings = Annotated[ServiceSettings, Depends(vault_settings.current)]
Live = Annotated[LiveSettings[ServiceSettings], Depends(vault_settings.live)]

app = FastAPI(lifespan=vault_settings.lifespan)
app.include_router(vault_settings.health_router())


@app.get("/")
async def index(settings: Settings, live: Live) -> dict[str, str | int]:
    """Uses the current settings: one attribute read per request."""
    return {
        "message": f"{settings.greeting}, world",
        "max_items": settings.max_items,
        "generation": live.generation,
        "worker": os.getpid(),
    }
