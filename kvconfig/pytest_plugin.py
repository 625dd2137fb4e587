"""pytest plugin (entry point ``pytest11``): fixtures that run a local Key Vault emulator.

Importing this plugin imports nothing heavy: every project that merely installs kvconfig loads it
into each pytest run, so the emulator, aiohttp and the Azure SDK are imported by the fixtures, the
first time one runs.

Fixtures:

``keyvault_ca`` (session scope, sync)
    One :class:`~kvconfig.emulator.CertificateAuthority` per test session, shared by every
    emulator so that generating keys is paid once.

``keyvault_emulator`` (function scope, async; needs pytest-asyncio)
    A fresh, running :class:`~kvconfig.emulator.KeyVaultEmulator` on 127.0.0.1 (own port, empty
    in-memory vault ``default``), closed at teardown. It serves from the test's event loop, so
    it is for ``async def`` tests (a sync test gets a setup error pointing at
    ``keyvault_emulator_sync``, not a hang). Works with ``asyncio_mode = "auto"`` and
    pytest-asyncio's function-scoped loop::

        async def test_reads(keyvault_emulator):
            keyvault_emulator.seed({"db-password": "s3cret"})
            async with keyvault_emulator.secret_client() as client:
                assert (await client.get_secret("db-password")).value == "s3cret"

``keyvault_emulator_sync`` (function scope, sync)
    The same emulator served from its own thread and event loop
    (:class:`~kvconfig.emulator.EmulatorThread`), for sync tests: FastAPI's ``TestClient``, the
    sync SDK, subprocesses. Its environment (``emu.environment()``: ``VAULT_URL``, the managed
    identity endpoint) is exported for the test's duration, so ``DefaultAzureCredential`` in the
    app under test gets tokens from it::

        def test_app(keyvault_emulator_sync):
            keyvault_emulator_sync.seed({"db-password": "s3cret"})
            with TestClient(app) as client:
                assert client.get("/health").status_code == 200

Marker:

``@pytest.mark.keyvault_secrets({"name": "value", ...}, vault="default")``
    Seeds the test's ``keyvault_emulator`` (or ``keyvault_emulator_sync``) before it runs (same
    as calling ``.seed(...)`` first thing in the test).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kvconfig.emulator import CertificateAuthority, KeyVaultEmulator

__all__ = ["keyvault_ca", "keyvault_emulator", "keyvault_emulator_sync"]

# What an emulator exports that must not leak into later tests' process-wide SSL context: the
# system context is built once per process, so a CA exported here would be trusted for good.
_NOT_EXPORTED = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "keyvault_secrets(secrets, vault='default'): seed the keyvault_emulator fixture's vault",
    )


@pytest.fixture(scope="session")
def keyvault_ca() -> CertificateAuthority:
    """One certificate authority for every emulator of the session."""
    from kvconfig.emulator import CertificateAuthority

    return CertificateAuthority.generate()


def _seed_from_markers(emu: KeyVaultEmulator, request: pytest.FixtureRequest) -> None:
    for marker in request.node.iter_markers("keyvault_secrets"):
        secrets = marker.args[0] if marker.args else marker.kwargs.get("secrets", {})
        emu.seed(secrets, vault=marker.kwargs.get("vault", "default"))


try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - without pytest-asyncio, pytest reports the async fixture
    _async_fixture = pytest.fixture  # type: ignore[assignment]


@_async_fixture
async def keyvault_emulator(
    keyvault_ca: CertificateAuthority, request: pytest.FixtureRequest
) -> AsyncIterator[KeyVaultEmulator]:
    """A fresh running emulator (in memory, own port), closed at teardown."""
    test = getattr(request.node, "function", None)
    if test is not None and not inspect.iscoroutinefunction(test):
        # The emulator would serve from the test's event loop, which a sync test never runs:
        # every request would wait out the SDK's timeouts and retries (~30 s) and then fail.
        pytest.fail(
            f"{request.node.name} is a sync test: keyvault_emulator serves from the test's event "
            "loop, which only runs in an `async def` test. Use keyvault_emulator_sync (an "
            "emulator on its own thread) for sync tests and FastAPI's TestClient.",
            pytrace=False,
        )
    from kvconfig.emulator import KeyVaultEmulator

    async with KeyVaultEmulator(ca=keyvault_ca) as emu:
        _seed_from_markers(emu, request)
        yield emu


@pytest.fixture
def keyvault_emulator_sync(
    keyvault_ca: CertificateAuthority,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[KeyVaultEmulator]:
    """A fresh emulator on its own thread, its environment exported; closed at teardown."""
    from kvconfig.emulator import EmulatorThread

    with EmulatorThread(ca=keyvault_ca) as emu:
        for key, value in emu.environment().items():
            if key not in _NOT_EXPORTED:
                monkeypatch.setenv(key, value)
        _seed_from_markers(emu, request)
        yield emu
