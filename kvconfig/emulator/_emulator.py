"""KeyVaultEmulator: the vault API over HTTPS plus a managed-identity endpoint, in this process."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import ipaddress
import secrets
import shutil
import socket
import ssl
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from azure.core.pipeline.transport import AioHttpTransport
from azure.keyvault.secrets.aio import SecretClient

from kvconfig.emulator._auth import (
    EmulatorCredential,
    EmulatorSyncCredential,
    TokenIssuer,
    identity_app,
)
from kvconfig.emulator._certs import CertificateAuthority, write_atomic
from kvconfig.emulator._events import DeliveryRecord, EventPublisher, EventSubscription, Schema
from kvconfig.emulator._faults import Faults
from kvconfig.emulator._server import RequestRecord, VaultRunner, VaultServer
from kvconfig.emulator._store import Store

__all__ = ["DEFAULT_VAULT", "KeyVaultEmulator"]

DEFAULT_VAULT = "default"


class _State(enum.Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


def _unix(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


class _PooledTransport(AioHttpTransport):  # type: ignore[misc]  # azure-core: untyped lazy import
    """azure-core's aiohttp transport over one pooled session that trusts the emulator's CA.

    The session is created when the client opens (inside the running loop) and closed with it.
    """

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        super().__init__(session_owner=True, use_env_settings=False)
        self._ssl_context = ssl_context

    async def open(self) -> None:
        session: aiohttp.ClientSession | None = getattr(self, "session", None)
        if session is None and not self._has_been_opened:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl_context),
                trust_env=False,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        await super().open()


class KeyVaultEmulator:
    """A local Azure Key Vault (secrets API) that the unmodified Azure SDK talks to over TLS.

    Example::

        async with KeyVaultEmulator() as emu:
            emu.seed({"db-password": "s3cret"})
            async with emu.secret_client() as client:
                secret = await client.get_secret("db-password")

    Args:
        host: Interface to listen on (loopback only is the point).
        port: Port of the ``default`` vault; 0 lets the OS choose.
        data: SQLite file for durable vaults; ``None`` keeps everything in memory.
        latency_ms: Added latency per request, or a uniform random range ``(lo, hi)`` (see
            :meth:`Faults.latency`); invalid values are refused here.
        ca: Certificate authority to issue the server certificate; generated when ``None``.
        ca_file: Where to write the CA certificate; a temp dir removed on close when ``None``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data: Path | str | None = None,
        latency_ms: float | tuple[float, float] = 0,
        ca: CertificateAuthority | None = None,
        *,
        ca_file: Path | None = None,
        identity_port: int = 0,
    ) -> None:
        self.host = host
        self._port = port
        self._data = Path(data) if data is not None else None
        self._ca = ca
        self._ca_file_arg = ca_file
        self._identity_port = identity_port
        self.faults = Faults(latency_ms)
        self.requests: list[RequestRecord] = []
        self.identity_header = secrets.token_urlsafe(24)
        self._issuer = TokenIssuer()
        self._store: Store | None = None
        self._vault_for_port: dict[int, str] = {}
        self._vault_urls: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._identity_runner: web.AppRunner | None = None
        self._server_ctx: ssl.SSLContext | None = None
        self._untrusted_ctx: ssl.SSLContext | None = None
        self._san: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        self._client_ctx: ssl.SSLContext | None = None
        self._tmpdir: Path | None = None
        self._ca_file: Path | None = None
        self._identity_endpoint: str | None = None
        self._state = _State.UNOPENED
        self.events = EventPublisher(self.vault_url_for, host=host)

    def __repr__(self) -> str:
        url = self._vault_urls.get(DEFAULT_VAULT, "not started")
        return f"KeyVaultEmulator({url!r}, vaults={sorted(self._vault_urls)})"

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> KeyVaultEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Generate certificates, open the store and start listening."""
        if self._state is not _State.UNOPENED:
            raise RuntimeError("a KeyVaultEmulator can only be started once")
        self._state = _State.OPENED
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise

    async def _start(self) -> None:
        ca = self._ca or CertificateAuthority.generate()
        self._ca = ca
        if self._ca_file_arg is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="kvemu-"))
            self._ca_file = self._tmpdir / "ca.pem"
        else:
            self._ca_file = self._ca_file_arg
        write_atomic(self._ca_file, ca.cert_pem)  # a kill mid-write must not tear a kept CA
        ips, dns = ["127.0.0.1"], ["localhost"]
        try:
            ipaddress.ip_address(self.host)
            is_ip = True
        except ValueError:
            is_ip = False
        if self.host not in ips + dns:
            (ips if is_ip else dns).append(self.host)
        self._server_ctx = ca.issue(tuple(ips), tuple(dns)).server_context(ca.cert_pem)
        self._san = (tuple(ips), tuple(dns))
        self._server_ctx.sni_callback = self._choose_certificate

        self._store = Store(self._data)
        self._store.on_new_version = self.events.secret_version_created
        server = VaultServer(
            self._store, self.faults, self._issuer, self._vault_for_port, self.requests
        )
        self._runner = VaultRunner(
            server.app(), handle_signals=False, access_log=None, shutdown_timeout=2.0
        )
        await self._runner.setup()
        self._identity_runner = web.AppRunner(
            identity_app(self._issuer, self.identity_header), handle_signals=False, access_log=None
        )
        await self._identity_runner.setup()
        sock = self._listen(self._identity_port)
        await web.SockSite(self._identity_runner, sock).start()
        self._identity_endpoint = f"http://{self.host}:{sock.getsockname()[1]}/msi/token"

        await self.add_vault(DEFAULT_VAULT, port=self._port)
        for name in self._store.vault_names:  # vaults persisted by an earlier run
            if name not in self._vault_urls:
                await self.add_vault(name)

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        sock.listen(128)
        sock.setblocking(False)
        return sock

    async def aclose(self) -> None:
        """Stop serving and release everything. Idempotent."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        await self.events.aclose()
        for runner in (self._runner, self._identity_runner):
            if runner is not None:
                await self._stop_runner(runner)
        self._runner = self._identity_runner = None
        if self._store is not None:
            self._store.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    @staticmethod
    async def _stop_runner(runner: web.AppRunner) -> None:
        handlers = list(runner.server.connections) if runner.server is not None else []
        transports = [h.transport for h in handlers if h.transport is not None]
        await runner.cleanup()
        # A TLS close waits for the peer's close_notify; a client that is gone or blocked (the
        # sync SDK on another thread) would leave the socket to the garbage collector once the
        # loop ends. Abort what is left, then let the loop run the close callbacks.
        for transport in transports:
            transport.abort()
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    def _require_open(self) -> None:
        if self._state is not _State.OPENED or self._runner is None:
            raise RuntimeError("the emulator is not running (use `async with KeyVaultEmulator()`)")

    # -- vaults --------------------------------------------------------------------------------

    def _choose_certificate(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object
    ) -> None:
        """Called for every TLS handshake: swap in the untrusted certificate when asked to."""
        if self.faults.untrusted_tls:
            if self._untrusted_ctx is None:
                rogue = CertificateAuthority.generate("kvconfig emulator untrusted CA")
                self._untrusted_ctx = rogue.issue(*self._san).server_context(rogue.cert_pem)
            connection.context = self._untrusted_ctx

    async def add_vault(self, name: str, *, port: int = 0) -> str:
        """Serve another vault at its own authority (own port); return its URL."""
        self._require_open()
        assert self._runner is not None and self._store is not None
        if name in self._vault_urls:
            return self._vault_urls[name]
        sock = self._listen(port)
        actual = sock.getsockname()[1]
        self._vault_for_port[actual] = name
        self._store.add_vault(name)
        self._store.commit()
        await web.SockSite(self._runner, sock, ssl_context=self._server_ctx).start()
        host = f"[{self.host}]" if ":" in self.host else self.host
        url = self._vault_urls[name] = f"https://{host}:{actual}"
        _forget_challenge(url)
        return url

    @property
    def vault_url(self) -> str:
        """URL of the ``default`` vault, e.g. ``https://127.0.0.1:PORT`` (no trailing slash)."""
        return self.vault_url_for(DEFAULT_VAULT)

    def vault_url_for(self, vault: str) -> str:
        """URL of a named vault."""
        self._require_open()
        try:
            return self._vault_urls[vault]
        except KeyError:
            raise KeyError(f"no vault named {vault!r}; add it with add_vault()") from None

    @property
    def vaults(self) -> Mapping[str, str]:
        """Vault name -> URL."""
        return dict(self._vault_urls)

    # -- trust and credentials -----------------------------------------------------------------

    @property
    def ca(self) -> CertificateAuthority:
        """The certificate authority behind the server certificate."""
        self._require_open()
        assert self._ca is not None
        return self._ca

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) to trust, e.g. as ``SSL_CERT_FILE``."""
        self._require_open()
        assert self._ca_file is not None
        return self._ca_file

    @property
    def identity_endpoint(self) -> str:
        """App Service style managed-identity endpoint (``IDENTITY_ENDPOINT``), plain http."""
        self._require_open()
        assert self._identity_endpoint is not None
        return self._identity_endpoint

    def environment(self) -> dict[str, str]:
        """Environment for a child process: vault URLs (``VAULT_URL``, ``VAULT_URL_<NAME>``), CA
        trust (``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``) and managed identity
        (``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``)."""
        env = {"VAULT_URL": self.vault_url}
        for name, url in self._vault_urls.items():
            if name != DEFAULT_VAULT:
                env[f"VAULT_URL_{name.upper().replace('-', '_')}"] = url
        env["SSL_CERT_FILE"] = env["REQUESTS_CA_BUNDLE"] = str(self.ca_file)
        env["IDENTITY_ENDPOINT"] = self.identity_endpoint
        env["IDENTITY_HEADER"] = self.identity_header
        return env

    def ssl_context(self) -> ssl.SSLContext:
        """Client-side SSL context trusting the emulator's CA (built once, cached)."""
        if self._client_ctx is None:
            self._client_ctx = self.ca.client_context()
        return self._client_ctx

    def credential(self) -> EmulatorCredential:
        """An ``AsyncTokenCredential`` whose (24 h) tokens this emulator accepts."""
        return EmulatorCredential(self._issuer)

    def sync_credential(self) -> EmulatorSyncCredential:
        """A sync ``TokenCredential`` for the ``requests``-based ``SecretClient``."""
        return EmulatorSyncCredential(self._issuer)

    def secret_client(self, vault: str = DEFAULT_VAULT, **kwargs: Any) -> SecretClient:
        """An aio ``SecretClient`` for a vault, over one pooled session trusting the CA.

        ``verify_challenge_resource=False`` is set (required for loopback hosts). Closing the
        client closes its session.
        """
        kwargs.setdefault("verify_challenge_resource", False)
        kwargs.setdefault("transport", _PooledTransport(self.ssl_context()))
        return SecretClient(self.vault_url_for(vault), self.credential(), **kwargs)

    # -- request log ---------------------------------------------------------------------------

    def clear_requests(self) -> None:
        """Forget the request log."""
        self.requests.clear()

    # -- Event Grid events (kvconfig.emulator._events) -----------------------------------------

    async def subscribe(
        self,
        endpoint_url: str,
        *,
        schema: Schema = "eventgrid",
        event_types: Collection[str] | None = None,
        vault: str = DEFAULT_VAULT,
        **options: Any,
    ) -> EventSubscription:
        """Deliver a vault's events to a webhook as Event Grid does, after its validation
        handshake (``SubscriptionValidationError`` if it fails). ``options``: ``secret``,
        ``secret_param``, ``bearer_token``, ``max_events_per_batch``, ``max_attempts``,
        ``retry_delay``, ``timeout``, ``validation_timeout``, ``ssl_context``."""
        self._require_open()
        return await self.events.subscribe(
            endpoint_url, schema=schema, event_types=event_types, vault=vault, **options
        )

    async def unsubscribe(self, subscription: EventSubscription | str) -> None:
        """Stop deliveries to a subscription, or to every subscription of an endpoint URL."""
        await self.events.unsubscribe(subscription)

    @property
    def deliveries(self) -> list[DeliveryRecord]:
        """Every webhook handshake and delivery attempt, in order."""
        return self.events.deliveries

    def scan_expiry(self, now: dt.datetime | None = None) -> int:
        """Queue ``SecretNearExpiry``/``SecretExpired`` events as of ``now``; return how many."""
        store = self._store_open()
        return self.events.scan_expiry(
            {name: store.list_secrets(name) for name in store.vault_names}, now
        )

    async def events_idle(self, timeout: float = 10.0) -> None:
        """Wait until every queued event was delivered or dropped."""
        await self.events.idle(timeout)

    # -- direct store access (not logged as requests) --------------------------------------------

    def _store_open(self) -> Store:
        self._require_open()
        assert self._store is not None
        return self._store

    def set_secret(
        self,
        name: str,
        value: str,
        vault: str = DEFAULT_VAULT,
        *,
        enabled: bool = True,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
        expires_on: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
        created: dt.datetime | None = None,
    ) -> str:
        """Add a version of a secret directly; return the new 32-hex version.

        ``created`` backdates the version (its ``created`` and ``updated`` times), e.g. to seed
        a vault whose secrets existed long before the service under test started.
        """
        store = self._store_open()
        _, version = store.set(
            vault,
            name,
            value,
            content_type=content_type,
            tags=tags,
            enabled=enabled,
            not_before=_unix(not_before),
            expires=_unix(expires_on),
            created=_unix(created),
        )
        store.commit()
        return version.version

    def seed(
        self,
        secrets: Mapping[str, str],
        vault: str = DEFAULT_VAULT,
        *,
        created: dt.datetime | None = None,
    ) -> dict[str, str]:
        """Set several secrets at once (optionally backdated); return name -> version."""
        return {
            name: self.set_secret(name, value, vault, created=created)
            for name, value in secrets.items()
        }

    def update_secret(
        self,
        name: str,
        vault: str = DEFAULT_VAULT,
        *,
        version: str = "",
        enabled: bool | None = None,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
        expires_on: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
    ) -> None:
        """Change properties of the latest (or a given) version; ``None`` leaves one unchanged."""
        store = self._store_open()
        changes: dict[str, Any] = {"enabled": enabled}
        if content_type is not None:
            changes["content_type"] = content_type
        if tags is not None:
            changes["tags"] = tags
        if expires_on is not None:
            changes["expires"] = _unix(expires_on)
        if not_before is not None:
            changes["not_before"] = _unix(not_before)
        store.update(vault, name, version, **changes)
        store.commit()

    def delete_secret(self, name: str, vault: str = DEFAULT_VAULT) -> None:
        """Soft-delete a secret directly."""
        store = self._store_open()
        store.delete(vault, name)
        store.commit()


def _forget_challenge(url: str) -> None:
    """Start this authority cold in the SDK's process-wide challenge cache.

    The SDK caches the 401 challenge per ``host:port`` for the whole process. The OS reuses
    ports, so without this a new vault could inherit the challenge an earlier server on the same
    port answered: the SDK would skip the 401 round trip and tests counting requests would see
    one fewer, depending on which port they happened to get.
    """
    try:
        from azure.keyvault.secrets._shared import http_challenge_cache
    except ImportError:  # pragma: no cover - the SDK moved its private module
        return
    http_challenge_cache.remove_challenge_for_url(url)
