"""Shared helpers for the kvconfig core tests: a KeyVault factory bound to the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kvconfig import KeyVault
from kvconfig.emulator import KeyVaultEmulator, RequestRecord

VaultFactory = Callable[..., KeyVault]


@pytest.fixture
async def make_vault(keyvault_emulator: KeyVaultEmulator) -> AsyncIterator[VaultFactory]:
    """Build KeyVaults on the emulator with fast-failing defaults; all closed at teardown."""
    made: list[KeyVault] = []

    def factory(**kwargs: Any) -> KeyVault:
        options: dict[str, Any] = {
            "ca_file": keyvault_emulator.ca_file,
            "startup_timeout": 3.0,
            "retry_backoff": 0.01,
            "retry_backoff_max": 0.05,
            "request_timeout": 5.0,
        }
        options.update(kwargs)
        url = options.pop("vault_url", keyvault_emulator.vault_url)
        credential = options.pop("credential", None) or keyvault_emulator.credential()
        vault = KeyVault(url, credential, **options)
        made.append(vault)
        return vault

    yield factory
    for vault in made:
        await vault.aclose()


def gets(emu: KeyVaultEmulator, *, status: int | None = None) -> list[RequestRecord]:
    """The GET requests the emulator served, optionally only those with ``status``."""
    return [r for r in emu.requests if r.method == "GET" and (status is None or r.status == status)]


def secret_gets(emu: KeyVaultEmulator) -> dict[str, int]:
    """Authenticated (non-401) GETs per secret name (lower-cased)."""
    counts: dict[str, int] = {}
    for r in emu.requests:
        if r.method != "GET" or r.status == 401:
            continue
        parts = [p for p in r.path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "secrets":
            counts[parts[1].lower()] = counts.get(parts[1].lower(), 0) + 1
    return counts
