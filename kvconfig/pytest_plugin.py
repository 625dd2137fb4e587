"""pytest plugin (entry point ``pytest11``): fixtures that run a local Key Vault emulator.

Fixtures:

``keyvault_ca`` (session scope, sync)
    One :class:`~kvconfig.emulator.CertificateAuthority` per test session, shared by every
    emulator so that generating keys is paid once.

``keyvault_emulator`` (function scope, async; needs pytest-asyncio)
    A fresh, running :class:`~kvconfig.emulator.KeyVaultEmulator` on 127.0.0.1 (own port, empty
    in-memory vault ``default``), closed at teardown. Works with ``asyncio_mode = "auto"`` and
    pytest-asyncio's function-scoped loop::

        async def test_reads(keyvault_emulator):
            keyvault_emulator.seed({"db-password": "s3cret"})
            async with keyvault_emulator.secret_client() as client:
                assert (await client.get_secret("db-password")).value == "s3cret"

Marker:

``@pytest.mark.keyvault_secrets({"name": "value", ...}, vault="default")``
    Seeds the ``keyvault_emulator`` of that test before it runs (same as calling
    ``keyvault_emulator.seed(...)`` first thing in the test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kvconfig.emulator import CertificateAuthority, KeyVaultEmulator

__all__ = ["keyvault_ca", "keyvault_emulator"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "keyvault_secrets(secrets, vault='default'): seed the keyvault_emulator fixture's vault",
    )


@pytest.fixture(scope="session")
def keyvault_ca() -> CertificateAuthority:
    """One certificate authority for every emulator of the session."""
    return CertificateAuthority.generate()


try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - without pytest-asyncio, pytest reports the async fixture
    _async_fixture = pytest.fixture  # type: ignore[assignment]


@_async_fixture
async def keyvault_emulator(
    keyvault_ca: CertificateAuthority, request: pytest.FixtureRequest
) -> AsyncIterator[KeyVaultEmulator]:
    """A fresh running emulator (in memory, own port), closed at teardown."""
    async with KeyVaultEmulator(ca=keyvault_ca) as emu:
        for marker in request.node.iter_markers("keyvault_secrets"):
            secrets = marker.args[0] if marker.args else marker.kwargs.get("secrets", {})
            emu.seed(secrets, vault=marker.kwargs.get("vault", "default"))
        yield emu
