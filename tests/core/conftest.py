"""Request-log counters for the kvconfig core tests (``make_vault`` is in ``tests/conftest.py``)."""

from __future__ import annotations

from kvconfig.emulator import KeyVaultEmulator, RequestRecord


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
