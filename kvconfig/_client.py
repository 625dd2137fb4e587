"""Building the aio ``SecretClient``: one pooled aiohttp session, one SSL context.

Why not the SDK defaults (see the service reference, section 11):

- ``connection_verify="ca.pem"`` builds an SSL context per request and defeats connection
  pooling (~4 ms CPU and a TLS handshake per call); one context on the connector does not.
- ``trust_env=True`` costs ~1 ms CPU per request (netrc and proxy lookups): on only when asked
  or when a proxy variable (``HTTPS_PROXY``, ``ALL_PROXY``) is set, so a proxy is never ignored.
- A trimmed pipeline: user agent and Key Vault's challenge authentication, nothing else.
  kvconfig retries itself (one retry policy, one deadline), Key Vault does not redirect, and
  kvconfig logs without values; the SDK's request ids (``uuid1``), header/body logging,
  distributed tracing, redirect and retry policies and its second JSON parse of every body
  (``ContentDecodePolicy``; the SDK's operations call ``response.json()`` themselves) cost CPU
  on every request and do nothing for kvconfig. See :func:`pipeline_policies`.
- The system SSL context is built per :class:`~kvconfig.KeyVault`, not cached for the process:
  ``SSL_CERT_FILE``/``SSL_CERT_DIR`` set after the first vault still take effect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from os import PathLike
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.credentials_async import AsyncSupportsTokenInfo, AsyncTokenCredential
from azure.core.pipeline.policies import AsyncHTTPPolicy, SansIOHTTPPolicy, UserAgentPolicy
from azure.core.pipeline.transport import AioHttpTransport
from azure.keyvault.secrets import __version__ as _SDK_VERSION
from azure.keyvault.secrets.aio import SecretClient

from kvconfig._errors import ConfigurationError, VaultAuthenticationError
from kvconfig._rawget import RawSecretReader

logger = logging.getLogger("kvconfig")

__all__ = [
    "SignallingCredential",
    "VaultClients",
    "build_clients",
    "build_secret_client",
    "build_session",
    "build_ssl_context",
    "is_loopback",
    "pipeline_policies",
    "proxy_configured",
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

    Without ``ca_file`` the system store is loaded afresh (a few ms, once per vault): not cached
    for the process, so ``SSL_CERT_FILE`` set later is honoured (OpenSSL reads it at load time).
    """
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load CA file {str(ca_file)!r}: {exc}") from exc


# aiohttp ignores (with a DeprecationWarning) ``enable_cleanup_closed`` on the Pythons whose
# asyncio no longer needs it (cpython#118960: 3.12.8 and later, 3.13.1 and later).
_CLEANUP_CLOSED_HONOURED = sys.version_info < (3, 12, 8) or (3, 13) <= sys.version_info < (3, 13, 1)

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def proxy_configured() -> bool:
    """Whether a proxy variable that applies to https URLs is set (read now, not cached)."""
    return any(os.environ.get(name) for name in _PROXY_VARIABLES)


def build_session(
    ssl_context: ssl.SSLContext, *, limit: int, trust_env: bool
) -> aiohttp.ClientSession:
    """The one pooled session every request of a :class:`~kvconfig.KeyVault` goes through.

    aiohttp honours the proxy variables (and ``NO_PROXY``) only with ``trust_env``, which costs
    lookups on every request; it is switched on when asked or when a proxy variable is set, so
    ``HTTPS_PROXY`` is never silently ignored and an unproxied process pays nothing.

    A connection closed on release (a cancelled request: the startup deadline, a permanent
    error elsewhere in the load) starts a TLS close that needs the vault's reply, which nobody
    awaits; where aiohttp still offers it, ``enable_cleanup_closed`` makes closing the session
    abort those connections, so closing a vault leaves no socket to the loop's fate.

    Must be called with a running event loop.
    """
    connector = aiohttp.TCPConnector(
        ssl=ssl_context, limit=limit, enable_cleanup_closed=_CLEANUP_CLOSED_HONOURED
    )
    # auto_decompress=False and a dummy cookie jar mirror azure-core's own default session.
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=trust_env or proxy_configured(),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


# What asyncio raises when a coroutine uses a transport of a loop that was closed.
_LOOP_CLOSED = "Event loop is closed"

_TokenT = TypeVar("_TokenT", AccessToken, AccessTokenInfo)


class SignallingCredential:
    """Wraps the user's credential and sets :attr:`token_ready` once a token was obtained.

    The SDK caches the vault's challenge *before* asking for a token and stores the token right
    after ``get_token`` returns, so once this event is set new requests go out authorised: the
    priming request need not complete before the other requests are sent.

    An aio credential that fails with "Event loop is closed" is bound to a loop that ended (an
    ``azure.identity.aio`` credential keeps its HTTP session on the loop it first ran on, so a
    ``KeyVault`` used by one ``asyncio.run`` after another fails once the token needs renewing):
    that becomes a :class:`~kvconfig.VaultAuthenticationError` saying what to do instead.
    """

    def __init__(self, inner: AsyncTokenCredential, vault_url: str = "") -> None:
        self._inner = inner
        self._vault_url = vault_url
        self.token_ready = asyncio.Event()

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return await self._obtain(self._inner.get_token(*scopes, **kwargs))

    async def _obtain(self, call: Awaitable[_TokenT]) -> _TokenT:
        try:
            token = await call
        except RuntimeError as exc:
            if str(exc) != _LOOP_CLOSED:
                raise
        else:
            self.token_ready.set()
            return token
        raise self._bound_to_closed_loop()  # outside the handler: nothing chained

    def _bound_to_closed_loop(self) -> VaultAuthenticationError:
        kind = type(self._inner).__name__
        return VaultAuthenticationError(
            f"no token for vault {self._vault_url}: the credential ({kind}) is bound to an "
            f"event loop that has ended (azure.identity.aio credentials keep their HTTP session "
            f"on the loop they first ran on). To use one KeyVault across several asyncio.run() "
            f"calls, pass a sync credential such as azure.identity.DefaultAzureCredential() "
            f"(kvconfig calls it in a thread) or use SyncKeyVault",
            vault_url=self._vault_url,
        )

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
        return await self._obtain(info_source.get_token_info(*scopes, options=options))


def signalling(credential: AsyncTokenCredential, vault_url: str = "") -> SignallingCredential:
    """Wrap ``credential``, keeping whether it has ``get_token_info``."""
    if hasattr(credential, "get_token_info"):
        return _SignallingTokenInfoCredential(credential, vault_url)
    return SignallingCredential(credential, vault_url)


def build_secret_client(
    vault_url: str,
    credential: AsyncTokenCredential | SignallingCredential,
    session: aiohttp.ClientSession,
    *,
    trust_env: bool,
    api_version: str | None = None,
) -> SecretClient:
    """An aio ``SecretClient`` over ``session`` with the trimmed :func:`pipeline_policies`.

    ``verify_challenge_resource`` is relaxed only for loopback hosts, where it can never pass
    (the resource must be a parent domain of the vault host).
    """
    return build_clients(
        vault_url, credential, session, trust_env=trust_env, api_version=api_version
    ).secrets


@dataclass(frozen=True, slots=True)
class VaultClients:
    """The SDK client (list pages, anything else) and the raw GET reader of one vault.

    Both share one policy list (one challenge, one cached token) and one session. Close
    ``reader`` then ``secrets``; neither closes the session.
    """

    secrets: SecretClient
    reader: RawSecretReader

    async def close(self) -> None:
        await self.reader.close()
        await self.secrets.close()


def build_clients(
    vault_url: str,
    credential: AsyncTokenCredential | SignallingCredential,
    session: aiohttp.ClientSession,
    *,
    trust_env: bool,
    api_version: str | None = None,
) -> VaultClients:
    """:func:`build_secret_client` plus a :class:`RawSecretReader` on the same policies."""
    verify = not is_loopback(vault_host(vault_url))
    kwargs: dict[str, Any] = {}
    if api_version is not None:
        kwargs["api_version"] = api_version
    policies = pipeline_policies(credential, verify_challenge_resource=verify)
    if policies is not None:
        kwargs["policies"] = policies
    # One transport for both pipelines: azure-core chains a policy to its successor through the
    # policy instance (`policy.next`), so the shared challenge policy must lead to the same
    # transport whichever pipeline was built last.
    transport = AioHttpTransport(session=session, session_owner=False)
    client = SecretClient(
        vault_url=vault_url,
        credential=credential,
        transport=transport,
        verify_challenge_resource=verify,
        use_env_settings=trust_env,
        retry_total=0,
        **kwargs,
    )
    reader = RawSecretReader(client, policies=policies, transport=transport, session=session)
    return VaultClients(client, reader)


# -- the trimmed pipeline ------------------------------------------------------------------------
#
# Key Vault's challenge protocol (401 challenge, scope and tenant from the challenge, resource
# verification, CAE claims challenges, token caching and refresh, the shared challenge cache)
# lives in the SDK's AsyncChallengeAuthPolicy, which only a private module exports. Rather than
# re-implement ~300 lines of security-sensitive protocol, kvconfig reuses it, isolated here:
# - pyproject.toml pins azure-keyvault-secrets to the versions this code was tested against
#   (_TRIMMED_SDK_VERSIONS; a test checks the two agree); any other version installed anyway,
#   or a failed import, falls back to the SDK's own full pipeline (slower, same behaviour,
#   logged at DEBUG), so an SDK upgrade can cost speed but never correctness;
# - tests/core/test_client.py runs it against the real package and the emulator (challenge,
#   cached token, claims challenge, errors, Retry-After, timeouts).
_TRIMMED_SDK_VERSIONS = ((4, 12), (4, 13))  # [low, high)


_FALLBACK = "azure-keyvault-secrets %s (%s): using the SDK's default pipeline (slower)"


def _sdk_version_tested(version: str) -> bool:
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    low, high = _TRIMMED_SDK_VERSIONS
    return low <= major_minor < high


def pipeline_policies(
    credential: AsyncTokenCredential | SignallingCredential,
    *,
    verify_challenge_resource: bool,
    sdk_version: str = _SDK_VERSION,
) -> list[AsyncHTTPPolicy[Any, Any] | SansIOHTTPPolicy[Any, Any]] | None:
    """The policies kvconfig's ``SecretClient`` runs: user agent, then challenge auth.

    ``None`` means "use the SDK's default pipeline": the installed SDK is outside the tested
    range or no longer has the challenge policy where this version expects it.
    """
    if not _sdk_version_tested(sdk_version):
        logger.debug(_FALLBACK, sdk_version, "untested version")
        return None
    try:
        from azure.keyvault.secrets._shared.async_challenge_auth_policy import (
            AsyncChallengeAuthPolicy,
        )
    except ImportError:
        logger.debug(_FALLBACK, sdk_version, "no challenge policy where expected")
        return None
    return [
        UserAgentPolicy(sdk_moniker=f"keyvault-secrets/{_SDK_VERSION}"),
        AsyncChallengeAuthPolicy(credential, verify_challenge_resource=verify_challenge_resource),
    ]
