"""Helpers for the library half of the reliability suite (imported by name, like ``_figures``).

Every secret value these tests write goes through :func:`canary`, so the leak test
(``test_secret_leaks.py``) can prove that no value ever shows up in logs, errors, reprs, events
or CLI output: a value is always ``CANARY-<32 hex>`` plus an optional readable suffix.
"""

from __future__ import annotations

import gc
import os
import uuid
from typing import Any

import aiohttp

from kvconfig import KeyVault
from kvconfig.emulator import KeyVaultEmulator

__all__ = [
    "CANARY_PREFIX",
    "FAST",
    "canary",
    "live_sessions",
    "make_vault",
    "open_fds",
]

CANARY_PREFIX = "CANARY-"

# Fast-failing options for tests: short backoff, bounded startup.
FAST: dict[str, Any] = {
    "startup_timeout": 2.0,
    "retry_backoff": 0.01,
    "retry_backoff_max": 0.05,
    "request_timeout": 5.0,
}


def canary(suffix: str = "") -> str:
    """A unique secret value: ``CANARY-<uuid hex>`` (+ ``-suffix``)."""
    value = f"{CANARY_PREFIX}{uuid.uuid4().hex}"
    return f"{value}-{suffix}" if suffix else value


def make_vault(emu: KeyVaultEmulator, **kwargs: Any) -> KeyVault:
    """A :class:`KeyVault` on ``emu`` with :data:`FAST` options (overridable)."""
    options = {**FAST, "ca_file": emu.ca_file, **kwargs}
    credential = options.pop("credential", None) or emu.credential()
    return KeyVault(emu.vault_url, credential, **options)


def open_fds() -> int:
    """File descriptors open in this process (Linux ``/proc/self/fd``)."""
    return len(os.listdir("/proc/self/fd"))


def live_sessions() -> int:
    """Unclosed ``aiohttp.ClientSession`` objects alive in this process (after a gc pass)."""
    gc.collect()
    return sum(
        1 for obj in gc.get_objects() if isinstance(obj, aiohttp.ClientSession) and not obj.closed
    )
