"""Building the aio ``SecretClient``: one pooled aiohttp session, one SSL context.

Why not the SDK defaults (see the service reference, section 11):

- ``connection_verify="ca.pem"`` builds an SSL context per request and defeats connection
  pooling (~4 ms CPU and a TLS handshake per call); one context on the connector does not.
- ``trust_env=True`` costs ~1 ms CPU per request (netrc and proxy lookups); off unless asked.
- The SDK's retry policy is disabled (``retry_total=0``): kvconfig retries itself, so there is
  exactly one retry policy with one deadline.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import ssl
from os import PathLike
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.credentials_async import AsyncSupportsTokenInfo, AsyncTokenCredential
from azure.core.pipeline.transport import AioHttpTransport
from azure.keyvault.secrets.aio import SecretClient

from kvconfig._errors import ConfigurationError

__all__ = [
    "SignallingCredential",
    "build_secret_client",
    "build_session",
    "build_ssl_context",
    "is_loopback",
    "signalling",
    "vault_host",
]


def vault_host(vault_url: str) -> str:
    """The host of ``vault_url``; raises :class:`ConfigurationError` unless it is an https URL."""
    parts = urlsplit(vault_url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigurationError(
            f"vault URL must be an absolute https URL, got {vault_url!r} "
            "(Key Vault authentication refuses plain http)"
        )
    return parts.hostname


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost``, in 127.0.0.0/8 or ``::1``."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_ssl_context(ca_file: str | PathLike[str] | None) -> ssl.SSLContext:
    """One client SSL context trusting ``ca_file`` if given, else the system trust store.

    A ``ca_file`` *replaces* the system store, as ``requests``' ``verify=`` does: it is meant for
    the emulator or a TLS-inspecting proxy, which present only certificates of that CA.
    """
    if ca_file is None:
        return _system_context()
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load CA file {str(ca_file)!r}: {exc}") from exc


@functools.cache
def _system_context() -> ssl.SSLContext:
    # Loading the system store costs milliseconds; a client context is safe to share.
    return ssl.create_default_context()


def build_session(
    ssl_context: ssl.SSLContext, *, limit: int, trust_env: bool
) -> aiohttp.ClientSession:
    """The one pooled session every request of a :class:`~kvconfig.KeyVault` goes through.

    Must be called with a running event loop.
    """
    connector = aiohttp.TCPConnector(ssl=ssl_context, limit=limit)
    # auto_decompress=False and a dummy cookie jar mirror azure-core's own default session.
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=trust_env,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class SignallingCredential:
    """Wraps the user's credential and sets :attr:`token_ready` once a token was obtained.

    The SDK caches the vault's challenge *before* asking for a token and stores the token right
    after ``get_token`` returns, so once this event is set new requests go out authorised: the
    priming request need not complete before the other requests are sent.
    """

    def __init__(self, inner: AsyncTokenCredential) -> None:
        self._inner = inner
        self.token_ready = asyncio.Event()

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        token = await self._inner.get_token(*scopes, **kwargs)
        self.token_ready.set()
        return token

    async def close(self) -> None:
        await self._inner.close()

    async def __aenter__(self) -> SignallingCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _SignallingTokenInfoCredential(SignallingCredential):
    """Same, for credentials with ``get_token_info`` (the SDK prefers it when present)."""

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        info_source = cast(AsyncSupportsTokenInfo, self._inner)
        token = await info_source.get_token_info(*scopes, options=options)
        self.token_ready.set()
        return token


def signalling(credential: AsyncTokenCredential) -> SignallingCredential:
    """Wrap ``credential``, keeping whether it has ``get_token_info``."""
    if hasattr(credential, "get_token_info"):
        return _SignallingTokenInfoCredential(credential)
    return SignallingCredential(credential)


def build_secret_client(
    vault_url: str,
    credential: AsyncTokenCredential | SignallingCredential,
    session: aiohttp.ClientSession,
    *,
    trust_env: bool,
    api_version: str | None = None,
) -> SecretClient:
    """An aio ``SecretClient`` over ``session`` with the SDK's retries off.

    ``verify_challenge_resource`` is relaxed only for loopback hosts, where it can never pass
    (the resource must be a parent domain of the vault host).
    """
    kwargs: dict[str, Any] = {}
    if api_version is not None:
        kwargs["api_version"] = api_version
    return SecretClient(
        vault_url=vault_url,
        credential=credential,
        transport=AioHttpTransport(session=session, session_owner=False),
        verify_challenge_resource=not is_loopback(vault_host(vault_url)),
        use_env_settings=trust_env,
        retry_total=0,
        **kwargs,
    )
