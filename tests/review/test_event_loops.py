"""Issue 9 item 13: a KeyVault used by one asyncio.run after another rebinds and leaks nothing;
the credential that cannot follow it (an aio one) fails clearly, a sync one serves every run."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
from typing import Any

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


def test_a_sync_credential_serves_every_asyncio_run() -> None:
    """A sync credential (what the README recommends across asyncio.run calls): KeyVault wraps
    it, its get_token runs in a thread, and each run's new client gets a token from it."""
    with EmulatorThread() as emu:
        emu.seed({"alpha": "a"})
        credential = CountingCredential(emu.sync_credential())
        vault = KeyVault(emu.vault_url, credential, ca_file=emu.ca_file, ttl=0)
        for _ in range(2):
            assert asyncio.run(vault.load(AlphaOnly)).alpha == "a"
        asyncio.run(vault.aclose())
        gc.collect()
        assert [r.status for r in emu.requests] == [401, 200, 200]
    assert credential.calls == 2 and threading.get_ident() not in credential.thread_ids


class CountingCredential:
    """A sync credential that records the threads its get_token ran on."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls = 0
        self.thread_ids: set[int] = set()

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.calls += 1
        self.thread_ids.add(threading.get_ident())
        return self._inner.get_token(*scopes, **kwargs)


BOUND_CHILD = """
import asyncio, os, time
from azure.identity.aio import DefaultAzureCredential
from pydantic_settings import BaseSettings
from kvconfig import KeyVault, VaultAuthenticationError

class AlphaOnly(BaseSettings):
    alpha: str

vault = KeyVault(os.environ["VAULT_URL"], DefaultAzureCredential(), ttl=0)
print(asyncio.run(vault.load(AlphaOnly)).alpha)
time.sleep(1.5)  # past the token's lifetime: the second run must get a new one
try:
    asyncio.run(vault.load(AlphaOnly))
except VaultAuthenticationError as exc:
    print(repr(exc.__cause__), repr(exc.__context__))
    print(exc)
"""


def test_an_aio_credential_bound_to_an_ended_loop_is_a_clear_error() -> None:
    """azure.identity.aio keeps its session on the loop it first ran on: once its token needs
    renewing in a later asyncio.run, the load fails with a VaultAuthenticationError that says
    what to pass instead (not asyncio's bare RuntimeError)."""
    with EmulatorThread(token_lifetime_s=1) as emu:
        emu.seed({"alpha": "a"})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_"))}
        env |= emu.environment()
        command = [sys.executable, "-c", BOUND_CHILD]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        vault_url = emu.vault_url
    assert result.returncode == 0, result.stderr
    first, chained, message = result.stdout.splitlines()
    assert first == "a" and chained == "None None"
    assert "bound to an event loop that has ended" in message
    assert "DefaultAzureCredential()" in message and vault_url in message
