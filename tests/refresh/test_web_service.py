"""The example web service: starts against the emulator, serves a rotated secret without a
restart, reports health, and leaves nothing running after cleanup."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
from aiohttp import web

from kvconfig.emulator import KeyVaultEmulator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "web_service.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kvconfig_example_web_service", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json()


async def test_web_service_serves_a_rotated_secret_within_an_interval(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    emu = keyvault_emulator
    emu.seed({"greeting": "hello", "upstream-token": "tok-secret-1", "max-items": "25"})
    example = load_example()
    interval = 0.2
    app = example.create_app(emu.vault_url, emu.credential, ca_file=emu.ca_file, interval=interval)
    runner = web.AppRunner(app)
    await runner.setup()  # runs the cleanup context's startup half: the initial load
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        async with aiohttp.ClientSession() as http:
            status, body = await get_json(http, f"{base}/")
            assert (status, body) == (
                200,
                {"message": "hello, world", "max_items": 25, "generation": 0},
            )
            status, state = await get_json(http, f"{base}/health")
            assert status == 200 and state["healthy"] and state["generation"] == 0

            async with emu.secret_client() as client:  # rotate with the SDK, as an operator
                await client.set_secret("greeting", "bonjour")
            _, before = await get_json(http, f"{base}/health")
            for _ in range(200):  # bounded wait; the count below is what is asserted
                _, body = await get_json(http, f"{base}/")
                if body["message"] == "bonjour, world":
                    break
                await asyncio.sleep(interval / 10)
            assert body == {"message": "bonjour, world", "max_items": 25, "generation": 1}
            _, after = await get_json(http, f"{base}/health")
            # Picked up by the first or second background refresh after the rotation.
            assert after["refreshes"] - before["refreshes"] <= 2
            assert "tok-secret" not in str(after)
    finally:
        await runner.cleanup()  # closes the watcher, the vault and the credential
    live = app[example.LIVE]
    assert live.closed and live._task is not None and live._task.done()


async def test_web_service_stays_ready_when_stale_and_strict_health_turns_503(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    emu = keyvault_emulator
    emu.seed({"upstream-token": "tok-secret-1"})
    example = load_example()
    app = example.create_app(emu.vault_url, emu.credential, ca_file=emu.ca_file, interval=0.05)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as http:
            emu.faults.outage(True)
            for _ in range(200):
                status, state = await get_json(http, f"http://{host}:{port}/health?strict=true")
                if status == 503:
                    break
                await asyncio.sleep(0.02)
            assert status == 503 and not state["healthy"] and not state["fresh"]
            assert "ServiceUnavailable" in state["last_error"]
            # Readiness stays green: the last-known-good configuration is still served.
            status, state = await get_json(http, f"http://{host}:{port}/health")
            assert status == 200 and state["serving"] and not state["fresh"]
            status, body = await get_json(http, f"http://{host}:{port}/")
            assert status == 200 and body["message"] == "hello, world"  # still serving
            emu.faults.outage(False)
    finally:
        await runner.cleanup()
