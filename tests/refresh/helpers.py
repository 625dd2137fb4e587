"""The watched Settings class, request-log counters and clock helpers for refresh tests."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig.emulator import KeyVaultEmulator


class AppSettings(BaseSettings):
    """The Settings class most live-settings tests watch."""

    model_config = SettingsConfigDict(env_prefix="KVCONFIG_REFRESH_TEST_")

    db_password: SecretStr
    api_key: str
    port: int = 8080


SEED = {"db-password": "pw-1", "api-key": "key-1", "port": "9000"}


def list_requests(emu: KeyVaultEmulator) -> int:
    """Authenticated list-page requests (``GET /secrets``) served so far."""
    return sum(
        1 for r in emu.requests if r.method == "GET" and r.path == "/secrets" and r.status != 401
    )


def secret_gets(emu: KeyVaultEmulator) -> dict[str, int]:
    """Authenticated value GETs per path (``/secrets/{name}/{version}``), names lower-cased."""
    counts: dict[str, int] = {}
    for r in emu.requests:
        parts = [p for p in r.path.split("/") if p]
        if r.method == "GET" and r.status != 401 and len(parts) >= 2 and parts[0] == "secrets":
            key = "/".join(parts[1:]).lower()
            counts[key] = counts.get(key, 0) + 1
    return counts


def total_gets(emu: KeyVaultEmulator) -> int:
    """Authenticated value GETs served so far."""
    return sum(secret_gets(emu).values())


async def next_second() -> None:
    """Sleep into the next whole wall-clock second.

    Key Vault's ``updated`` times count whole seconds, so a secret written in the current second
    is only trusted to a list pass (with ``clock_skew=0``) once a later second has begun.
    """
    now = time.time()
    await asyncio.sleep(math.floor(now) + 1.02 - now)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds (callbacks run on a dispatcher task, after refresh()).
    A "did not hang" bound, not a timing assertion."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (a plain condition, no event to wait on)
            await asyncio.sleep(0.005)
