"""Three vaults on one emulator, and request-log counters per vault.

The emulator serves each vault on its own port (vaults are told apart by authority, as the SDK
requires): ``default`` (the primary), ``shared`` and ``legacy``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from kvconfig import KeyVault
from kvconfig.emulator import KeyVaultEmulator


@dataclass
class Vaults:
    emu: KeyVaultEmulator
    primary: str
    shared: str
    legacy: str

    def name_of(self, url: str) -> str:
        return {self.primary: "default", self.shared: "shared", self.legacy: "legacy"}[url]

    def gets(self, vault: str) -> dict[str, int]:
        """Authenticated GETs of secrets in ``vault`` (emulator name), per ``name[/version]``."""
        counts: dict[str, int] = {}
        for r in self.emu.requests:
            parts = [p for p in r.path.split("/") if p]
            if (
                r.vault == vault
                and r.method == "GET"
                and r.status != 401
                and len(parts) >= 2
                and parts[0] == "secrets"
            ):
                key = "/".join(parts[1:]).lower()
                counts[key] = counts.get(key, 0) + 1
        return counts

    def statuses(self, vault: str) -> list[tuple[str, int]]:
        """(path, status) of every request ``vault`` served, challenges included."""
        return [(r.path.lower(), r.status) for r in self.emu.requests if r.vault == vault]

    def lists(self) -> int:
        return sum(1 for r in self.emu.requests if r.path == "/secrets" and r.status != 401)


@pytest.fixture
async def vaults(keyvault_emulator: KeyVaultEmulator) -> Vaults:
    emu = keyvault_emulator
    shared = await emu.add_vault("shared")
    legacy = await emu.add_vault("legacy")
    return Vaults(emu, emu.vault_url, shared, legacy)


MultiFactory = Callable[..., KeyVault]


@pytest.fixture
async def make_multi(vaults: Vaults) -> AsyncIterator[MultiFactory]:
    """KeyVaults on the primary vault with ``shared``/``legacy`` aliases and fast failures."""
    made: list[KeyVault] = []

    def factory(**kwargs: Any) -> KeyVault:
        options: dict[str, Any] = {
            "ca_file": vaults.emu.ca_file,
            "startup_timeout": 3.0,
            "retry_backoff": 0.01,
            "retry_backoff_max": 0.05,
            "vaults": {"shared": vaults.shared, "legacy": vaults.legacy},
        }
        options.update(kwargs)
        vault = KeyVault(vaults.primary, vaults.emu.credential(), **options)
        made.append(vault)
        return vault

    yield factory
    for vault in made:
        await vault.aclose()
