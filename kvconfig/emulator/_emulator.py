"""KeyVaultEmulator: the vault API over HTTPS plus a managed-identity endpoint, in this process."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import enum
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from azure.core.pipeline.transport import AioHttpTransport
from azure.keyvault.secrets.aio import SecretClient

from kvconfig.emulator._access import AccessPolicies, Identity
from kvconfig.emulator._auth import (
    TENANT_ID,
    TOKEN_LIFETIME_S,
    EmulatorCredential,
    EmulatorSyncCredential,
    TokenIssuer,
    identity_app,
)
from kvconfig.emulator._certs import CertificateAuthority, system_ca_pem, write_atomic
from kvconfig.emulator._entra import ENTRA_HOST, entra_app
from kvconfig.emulator._events import DeliveryRecord, EventPublisher, EventSubscription, Schema
from kvconfig.emulator._faults import Faults
from kvconfig.emulator._http import HTTP_LOG
from kvconfig.emulator._proxy import VAULT_HOST, ConnectProxy
from kvconfig.emulator._server import RequestRecord, VaultServer
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
            The bundle (system CAs + this CA) is written beside it (``*-bundle.pem``).
        identity_port: Port of the managed-identity endpoint; 0 lets the OS choose.
        proxy_port: Port of the HTTPS proxy (``NAME.vault.azure.net``); 0 lets the OS choose.
        request_logger: Called with each :class:`RequestRecord` once its answer is sent.
        token_lifetime_s: Lifetime of the tokens the emulator issues (Entra's are 60-90 min).

    With ``data``, the token-signing key and ``IDENTITY_HEADER`` are kept beside it
    (``FILE.auth.json``, owner-only), so a restart on the same ports keeps clients working.
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
        proxy_port: int = 0,
        request_logger: Callable[[RequestRecord], None] | None = None,
        token_lifetime_s: int = TOKEN_LIFETIME_S,
    ) -> None:
        self.host = host
        self._port = port
        self._data = Path(data) if data is not None else None
        self._ca = ca
        self._ca_file_arg = ca_file
        self._identity_port = identity_port
        self._proxy_port = proxy_port
        self._request_logger = request_logger
        self._ca_bundle_file: Path | None = None
        self._proxy: ConnectProxy | None = None
        self._vault_ports: dict[str, int] = {}
        self.faults = Faults(latency_ms)
        self.requests: list[RequestRecord] = []
        self.identity_header = secrets.token_urlsafe(24)
        self._issuer = TokenIssuer(lifetime_s=token_lifetime_s)
        self._token_lifetime_s = token_lifetime_s
        self._access = AccessPolicies()
        self._entra_runner: web.AppRunner | None = None
        self._entra_port = 0
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
        # What a shell that ran the exports trusts: the system's CAs and this one, so other HTTPS
        # clients in it keep working.
        self._ca_bundle_file = self._ca_file.with_name(self._ca_file.stem + "-bundle.pem")
        system = system_ca_pem()
        sep = b"" if not system or system.endswith(b"\n") else b"\n"
        write_atomic(self._ca_bundle_file, system + sep + ca.cert_pem)
        if self._data is not None:
            self._load_auth(self._data.with_name(self._data.name + ".auth.json"))
        # *.vault.azure.net: the proxy splices NAME.vault.azure.net to a vault's own socket.
        # and login.microsoftonline.com to the Entra stand-in (once a service principal exists).
        ips, dns = ["127.0.0.1"], ["localhost", "*.vault.azure.net", ENTRA_HOST]
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
            self._store,
            self.faults,
            self._issuer,
            self._vault_for_port,
            self.requests,
            self._request_logger,
            self._access,
        )
        self._runner = web.AppRunner(
            server.app(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=2.0,
            logger=HTTP_LOG,
            auto_decompress=False,  # the vault API decodes bodies itself (Azure-shaped errors)
        )
        await self._runner.setup()
        self._identity_runner = web.AppRunner(
            identity_app(self._issuer, self.identity_header, self._access),
            handle_signals=False,
            access_log=None,
        )
        await self._identity_runner.setup()
        sock = self._listen(self._identity_port)
        await web.SockSite(self._identity_runner, sock).start()
        self._identity_endpoint = f"http://{self.host}:{sock.getsockname()[1]}/msi/token"

        self._entra_runner = web.AppRunner(
            entra_app(self._issuer, self._access), handle_signals=False, access_log=None
        )
        await self._entra_runner.setup()
        sock = self._listen(0)
        await web.SockSite(self._entra_runner, sock, ssl_context=self._server_ctx).start()
        self._entra_port = sock.getsockname()[1]

        await self.add_vault(DEFAULT_VAULT, port=self._port)
        for name in self._store.vault_names:  # vaults persisted by an earlier run
            if name not in self._vault_urls:
                await self.add_vault(name)
        self._proxy = ConnectProxy(self._proxy_route)
        await self._proxy.start(self.host, self._proxy_port)

    async def _proxy_route(self, host: str, port: int) -> tuple[str, int] | None:
        """Where the proxy sends ``CONNECT host:port``: vault NAME (added on first use) for
        ``NAME.vault.azure.net:443``; the Entra stand-in for ``login.microsoftonline.com:443``
        once a service principal is declared; None (tunnel to the host itself) otherwise."""
        if host == ENTRA_HOST and port == 443 and self._access.has_service_principals:
            return self.host, self._entra_port
        match = VAULT_HOST.match(host)
        if match is None or port != 443 or self._state is not _State.OPENED:
            return None
        name = match.group(1)
        if name not in self._vault_ports:
            await self.add_vault(name)
        return self.host, self._vault_ports[name]

    def _load_auth(self, path: Path) -> None:
        """Reuse the signing key and identity header kept at ``path``, or keep these there."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            key = base64.b64decode(doc["signing_key"], validate=True)
            header = doc["identity_header"]
            if len(key) < 32 or not isinstance(header, str) or not header:
                raise ValueError
        except FileNotFoundError:
            doc = {
                "signing_key": base64.b64encode(self._issuer.key).decode("ascii"),
                "identity_header": self.identity_header,
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(doc).encode(), 0o600)
            return
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ValueError(
                f"{path} is not the emulator's auth file; remove it to start with new tokens"
            ) from None
        self._issuer = TokenIssuer(key, self._token_lifetime_s)
        self.identity_header = header

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
        if self._proxy is not None:
            await self._proxy.aclose()
            self._proxy = None
        for runner in (self._runner, self._identity_runner, self._entra_runner):
            if runner is not None:
                await self._stop_runner(runner)
        self._runner = self._identity_runner = self._entra_runner = None
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
        self._vault_ports[name] = actual
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
    def ca_bundle_file(self) -> Path:
        """The system's trusted CAs plus the emulator's CA (PEM): what ``SSL_CERT_FILE`` and
        ``REQUESTS_CA_BUNDLE`` point at, so other HTTPS clients keep trusting public hosts."""
        self._require_open()
        assert self._ca_bundle_file is not None
        return self._ca_bundle_file

    @property
    def identity_endpoint(self) -> str:
        """App Service style managed-identity endpoint (``IDENTITY_ENDPOINT``), plain http."""
        self._require_open()
        assert self._identity_endpoint is not None
        return self._identity_endpoint

    @property
    def proxy_url(self) -> str:
        """The HTTPS proxy (``HTTPS_PROXY``) that routes ``NAME.vault.azure.net`` to vault NAME."""
        self._require_open()
        assert self._proxy is not None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._proxy.port}"

    def environment(self) -> dict[str, str]:
        """Environment for a child process: vault URLs (``VAULT_URL``, ``VAULT_URL_<NAME>``), CA
        trust (``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``), managed identity
        (``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``), and for code that builds
        ``https://{KEY_VAULT_NAME}.vault.azure.net``: ``KEY_VAULT_NAME`` and the proxy
        (``HTTPS_PROXY``/``https_proxy``, with ``NO_PROXY``/``no_proxy`` keeping loopback, the
        vault URLs and the identity endpoint, direct)."""
        env = {"VAULT_URL": self.vault_url}
        for name, url in self._vault_urls.items():
            if name != DEFAULT_VAULT:
                env[f"VAULT_URL_{name.upper().replace('-', '_')}"] = url
        env["SSL_CERT_FILE"] = env["REQUESTS_CA_BUNDLE"] = str(self.ca_bundle_file)
        env["IDENTITY_ENDPOINT"] = self.identity_endpoint
        env["IDENTITY_HEADER"] = self.identity_header
        env["KEY_VAULT_NAME"] = DEFAULT_VAULT
        env["HTTPS_PROXY"] = env["https_proxy"] = self.proxy_url
        kept = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
        bypass = [*kept.split(","), self.host, "127.0.0.1", "localhost", "::1"]
        no_proxy = ",".join(dict.fromkeys(b.strip() for b in bypass if b.strip()))
        env["NO_PROXY"] = env["no_proxy"] = no_proxy
        return env

    def ssl_context(self) -> ssl.SSLContext:
        """Client-side SSL context trusting the emulator's CA (built once, cached)."""
        if self._client_ctx is None:
            self._client_ctx = self.ca.client_context()
        return self._client_ctx

    def credential(self, client_id: str | None = None) -> EmulatorCredential:
        """An ``AsyncTokenCredential`` whose tokens (of the default identity, or of a declared
        ``client_id``) this emulator accepts."""
        identity = self._identity(client_id)
        return EmulatorCredential(self._issuer, identity.client_id, identity.object_id)

    def sync_credential(self, client_id: str | None = None) -> EmulatorSyncCredential:
        """A sync ``TokenCredential`` for the ``requests``-based ``SecretClient``."""
        identity = self._identity(client_id)
        return EmulatorSyncCredential(self._issuer, identity.client_id, identity.object_id)

    def _identity(self, client_id: str | None) -> Identity:
        identity = self._access.find(client_id)
        if identity is None:
            raise KeyError(f"no identity with client_id {client_id!r}; add it with add_identity()")
        return identity

    # -- identities and permissions -------------------------------------------------------------

    def add_identity(
        self,
        client_id: str,
        permissions: Iterable[str] = ("all",),
        *,
        vaults: Mapping[str, Iterable[str]] | None = None,
        client_secret: str | None = None,
    ) -> Identity:
        """Declare a managed identity (what ``AZURE_CLIENT_ID`` names) and its secret
        permissions: ``permissions`` on every vault, ``vaults`` per vault (e.g.
        ``{"default": ["get"]}``). Permissions: get, list, set, delete, backup, restore,
        recover, purge, or ``all``. The managed-identity endpoint then issues its tokens when
        asked with ``client_id``; a request outside its permissions gets 403 ``Forbidden``.

        With ``client_secret`` it is also a service principal: ``EnvironmentCredential``
        (``AZURE_CLIENT_ID``, ``AZURE_CLIENT_SECRET``, ``AZURE_TENANT_ID`` =
        :attr:`tenant_id`) gets its tokens from ``login.microsoftonline.com`` through the
        emulator's proxy, which then routes that host to the emulator."""
        return self._access.add(client_id, permissions, vaults=vaults, client_secret=client_secret)

    @property
    def tenant_id(self) -> str:
        """The tenant the vaults' challenge names (what ``AZURE_TENANT_ID`` must be)."""
        return TENANT_ID

    def set_permissions(self, client_id: str, vault: str, permissions: Iterable[str]) -> None:
        """Replace an identity's secret permissions on one vault (the default identity's too:
        ``client_id`` ``00000000-0000-0000-0000-00000000e1e1``)."""
        self._access.set_permissions(client_id, vault, permissions)

    def secret_client(self, vault: str = DEFAULT_VAULT, **kwargs: Any) -> SecretClient:
        """An aio ``SecretClient`` for a vault, over one pooled session trusting the CA.

        ``verify_challenge_resource=False`` is set (required for loopback hosts). Closing the
        client closes its session. ``credential=emu.credential(client_id)`` acts as another
        identity.
        """
        kwargs.setdefault("verify_challenge_resource", False)
        kwargs.setdefault("transport", _PooledTransport(self.ssl_context()))
        credential = kwargs.pop("credential", None) or self.credential()
        return SecretClient(self.vault_url_for(vault), credential, **kwargs)

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
