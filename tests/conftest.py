"""Fixtures shared by every test folder: KeyVaults bound to the ``keyvault_emulator`` fixture.

The emulator fixture itself comes from kvconfig's pytest plugin (``kvconfig/pytest_plugin.py``),
exactly as users get it.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from kvconfig import KeyVault
from kvconfig.emulator import KeyVaultEmulator

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


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Collect garbage at each test's teardown, so a socket or transport a test leaves unclosed
    is reported (ResourceWarning, an error here) against that test, not a random later one."""
    yield
    gc.collect()
