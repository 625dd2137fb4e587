"""kvconfig.integrations.fastapi under FastAPI's TestClient, against the threaded emulator.

The example under uvicorn as a real server (1 and 2 workers) is in tests/test_examples.py.

No ``from __future__ import annotations`` here: FastAPI reads the annotations of the handler
defined inside ``make_app`` at run time, and a string naming a local alias cannot be resolved.
"""

import time
from collections.abc import Callable
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from kvconfig import ClosedError, MissingSettingError
from kvconfig.emulator import KeyVaultEmulator
from kvconfig.integrations.fastapi import VaultSettings


class AppSettings(BaseSettings):
    greeting: str = "hello"
    api_key: SecretStr


def make_app(emu: KeyVaultEmulator, **options: Any) -> tuple[FastAPI, VaultSettings[AppSettings]]:
    vault_settings = VaultSettings(
        AppSettings,
        vault_url=emu.vault_url,
        credential=emu.credential,
        ca_file=emu.ca_file,
        startup_timeout=3.0,
        **options,
    )
    Settings = Annotated[AppSettings, Depends(vault_settings.current)]
    app = FastAPI(lifespan=vault_settings.lifespan)
    app.include_router(vault_settings.health_router())

    @app.get("/")
    async def index(settings: Settings) -> dict[str, str]:
        return {"greeting": settings.greeting}

    return app, vault_settings


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20  # did not hang
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_lifespan_dependency_health_and_rotation(keyvault_emulator_sync: KeyVaultEmulator) -> None:
    emu = keyvault_emulator_sync
    emu.seed({"greeting": "hi", "api-key": "k1"})
    app, vault_settings = make_app(emu, interval=0.2)
    with TestClient(app) as client:
        assert client.get("/").json() == {"greeting": "hi"}
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["healthy"] is True and health.json()["generation"] == 0
        emu.set_secret("greeting", "rotated")
        eventually(lambda: client.get("/").json() == {"greeting": "rotated"})
        assert client.get("/health").json()["generation"] >= 1
        assert vault_settings.live().generation >= 1
    # Shut down: watcher, vault and credential closed; the dependency says so.
    assert client.app is app
    with pytest.raises(ClosedError, match="lifespan is not running"):
        vault_settings.current()
    assert vault_settings.health_response().status_code == 503
    count = len(emu.requests)
    time.sleep(0.5)  # more than two intervals: no refresh runs after shutdown
    assert len(emu.requests) == count


def test_startup_fails_with_kvconfig_error(keyvault_emulator_sync: KeyVaultEmulator) -> None:
    keyvault_emulator_sync.seed({"greeting": "hi"})
    app, vault_settings = make_app(keyvault_emulator_sync)
    with pytest.raises(MissingSettingError, match="api_key"), TestClient(app):
        pass
    assert "running" not in repr(vault_settings).replace("stopped", "")


def test_one_lifespan_at_a_time(keyvault_emulator_sync: KeyVaultEmulator) -> None:
    keyvault_emulator_sync.seed({"api-key": "k1"})
    app, _ = make_app(keyvault_emulator_sync)
    with TestClient(app), pytest.raises(RuntimeError, match="already running"), TestClient(app):
        pass


def test_health_route_is_ready_while_serving_and_strict_while_fresh(
    keyvault_emulator_sync: KeyVaultEmulator,
) -> None:
    """A vault outage longer than max_staleness: /health stays 200 (serving; the replica stays in
    rotation) with fresh false in the body, /health?strict=true answers 503; a disabled secret
    shows as degraded (its value kept), beside a rotation that is published; on_refresh_error
    hears of the outage."""
    emu = keyvault_emulator_sync
    emu.seed({"greeting": "hi", "api-key": "k1"})
    errors: list[str] = []
    app, _ = make_app(
        emu,
        interval=0.05,
        watch_options={"max_staleness": 0.1},
        on_refresh_error=lambda error: errors.append(type(error).__name__),
    )
    with TestClient(app) as client:
        body = client.get("/health?strict=true").json()
        assert (body["serving"], body["fresh"], body["degraded"]) == (True, True, False)
        emu.faults.outage(True)
        eventually(lambda: client.get("/health?strict=true").status_code == 503)
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["serving"] is True and health.json()["fresh"] is False
        emu.faults.outage(False)
        eventually(lambda: client.get("/health?strict=true").status_code == 200)

        emu.set_secret("greeting", "rotated")
        emu.update_secret("api-key", enabled=False)
        eventually(lambda: client.get("/health").json()["degraded"])
        [issue] = client.get("/health").json()["issues"]
        assert (issue["kind"], issue["secret"], issue["fields"]) == (
            "disabled",
            "api-key",
            ["api_key"],
        )
        assert client.get("/").json() == {"greeting": "rotated"}
        assert client.get("/health?strict=true").status_code == 200  # degraded is not stale
    assert "VaultUnavailableError" in errors or "RefreshUnavailableError" in errors
