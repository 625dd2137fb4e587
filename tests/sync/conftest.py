"""A sync emulator (``EmulatorThread``) for the sync API and drop-in source tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from kvconfig.emulator import EmulatorThread, KeyVaultEmulator


@pytest.fixture
def sync_emulator() -> Iterator[KeyVaultEmulator]:
    """A fresh emulator on its own thread; asserts no kvconfig thread outlives the test."""
    with EmulatorThread() as emu:
        yield emu
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("kvconfig-")]
    assert leftover == [], leftover
