"""Bearer tokens the emulator issues and accepts, its credentials, the managed-identity endpoint.

Tokens are ``kvemu.<payload>.<signature>``: base64url JSON ``{"exp", "aud", "jti"}`` signed with
HMAC-SHA256 under a per-emulator random key, so only tokens this emulator issued are accepted and
no registry is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from types import TracebackType
from typing import Any

from aiohttp import web
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

from kvconfig.emulator._store import b64url_decode, b64url_encode

__all__ = [
    "CHALLENGE",
    "TENANT_ID",
    "TOKEN_LIFETIME_S",
    "EmulatorCredential",
    "EmulatorSyncCredential",
    "TokenIssuer",
    "identity_app",
]

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
RESOURCE = "https://vault.azure.net"
CHALLENGE = (
    f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", resource="{RESOURCE}"'
)
TOKEN_LIFETIME_S = 24 * 3600
_PREFIX = "kvemu"


class TokenIssuer:
    """Signs and verifies the emulator's bearer tokens."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    @property
    def key(self) -> bytes:
        """The signing key (kept next to ``--data`` so tokens survive a restart)."""
        return self._key

    def __repr__(self) -> str:
        return "TokenIssuer()"

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest()
        return b64url_encode(mac)

    def issue(
        self, audience: str = RESOURCE, lifetime_s: int = TOKEN_LIFETIME_S
    ) -> AccessTokenInfo:
        """A new token for ``audience``, valid ``lifetime_s`` seconds."""
        expires_on = int(time.time()) + lifetime_s
        doc = {"exp": expires_on, "aud": audience, "jti": secrets.token_hex(8)}
        payload = b64url_encode(json.dumps(doc, separators=(",", ":")).encode())
        return AccessTokenInfo(f"{_PREFIX}.{payload}.{self._sign(payload)}", expires_on)

    def verify(self, authorization: str | None) -> bool:
        """True if the ``Authorization`` header carries an unexpired token from this issuer."""
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        parts = token.strip().split(".")
        # Our tokens are ASCII; anything else is foreign (and would not encode for the HMAC).
        if len(parts) != 3 or parts[0] != _PREFIX or not token.isascii():
            return False
        if not hmac.compare_digest(self._sign(parts[1]), parts[2]):
            return False
        try:
            doc = json.loads(b64url_decode(parts[1]))
            return int(doc["exp"]) > time.time()
        except (ValueError, KeyError, TypeError):
            return False


def _audience(scopes: tuple[str, ...]) -> str:
    scope = scopes[0] if scopes else RESOURCE
    return scope.removesuffix("/.default")


class EmulatorCredential:
    """An ``AsyncTokenCredential`` whose tokens the emulator accepts (valid 24 h).

    Holds no I/O resources; ``close()`` and ``async with`` exist for the protocol.
    """

    def __init__(self, issuer: TokenIssuer) -> None:
        self._issuer = issuer

    def __repr__(self) -> str:
        return "EmulatorCredential()"

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        info = self._issuer.issue(_audience(scopes))
        return AccessToken(info.token, info.expires_on)

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        return self._issuer.issue(_audience(scopes))

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> EmulatorCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()


class EmulatorSyncCredential:
    """A sync ``TokenCredential`` (for the ``requests``-based ``SecretClient``)."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self._issuer = issuer

    def __repr__(self) -> str:
        return "EmulatorSyncCredential()"

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        info = self._issuer.issue(_audience(scopes))
        return AccessToken(info.token, info.expires_on)

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        return self._issuer.issue(_audience(scopes))

    def close(self) -> None:
        return None

    def __enter__(self) -> EmulatorSyncCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def identity_app(issuer: TokenIssuer, identity_header: str) -> web.Application:
    """App Service style managed-identity endpoint (api-version 2019-08-01) at ``/msi/token``.

    ``GET /msi/token?api-version=2019-08-01&resource=R`` with ``X-IDENTITY-HEADER`` answers
    ``{"access_token", "expires_on", "resource", "token_type", "client_id"}`` like App Service.
    """

    async def token(request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("X-IDENTITY-HEADER", ""), identity_header):
            return _msi_error(401, "The X-IDENTITY-HEADER header is missing or wrong.")
        if request.query.get("api-version") != "2019-08-01":
            return _msi_error(400, "Unsupported api-version; use 2019-08-01.")
        resource = request.query.get("resource", "")
        if not resource:
            return _msi_error(400, "The resource query parameter is required.")
        info = issuer.issue(_audience((resource,)))
        body = {
            "access_token": info.token,
            "expires_on": str(info.expires_on),  # App Service sends it as a string
            "resource": resource,
            "token_type": "Bearer",
            "client_id": request.query.get("client_id", "00000000-0000-0000-0000-00000000e1e1"),
        }
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/msi/token", token)
    return app


def _msi_error(status: int, message: str) -> web.Response:
    return web.json_response({"statusCode": status, "message": message}, status=status)
