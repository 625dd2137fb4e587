"""Issue 9 item 13: a KeyVault used by one asyncio.run after another rebinds and leaks nothing."""

from __future__ import annotations

import asyncio
import gc

from pydantic_settings import BaseSettings

from kvconfig import KeyVault
from kvconfig.emulator import EmulatorThread


class AlphaOnly(BaseSettings):
    alpha: str


def test_second_asyncio_run_rebinds_and_leaks_nothing() -> None:
    with EmulatorThread() as emu:
        emu.seed({"alpha": "a"})
        vault = KeyVault(emu.vault_url, emu.credential(), ca_file=emu.ca_file, ttl=0)
        assert asyncio.run(vault.load(AlphaOnly)).alpha == "a"
        assert vault._session is None  # released when the first loop shut down
        emu.set_secret("alpha", "b")  # a plain memory operation, between requests
        assert asyncio.run(vault.load(AlphaOnly)).alpha == "b"
        asyncio.run(vault.aclose())
        gc.collect()  # an unclosed session would warn here (warnings are errors)
