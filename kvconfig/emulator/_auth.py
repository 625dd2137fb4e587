"""Bearer tokens the emulator issues and accepts, its credentials, the managed-identity endpoint.

Tokens are ``kvemu.<payload>.<signature>``: base64url JSON ``{"exp", "iat", "aud", "appid",
"oid", "jti"}`` signed with HMAC-SHA256 under a per-emulator random key (kept beside ``--data``),
so only tokens this emulator issued are accepted and no registry is needed. Like Entra's, a token
is for one audience (``https://vault.azure.net``; another is 401) and one identity.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiohttp import web
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

from kvconfig.emulator._errors import ServiceError
from kvconfig.emulator._store import b64url_decode, b64url_encode

if TYPE_CHECKING:
    from kvconfig.emulator._access import AccessPolicies

__all__ = [
    "CHALLENGE",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_OBJECT_ID",
    "TENANT_ID",
    "TOKEN_LIFETIME_S",
    "Claims",
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


def claims_challenge(not_before: float) -> str:
    """The ``WWW-Authenticate`` of a CAE claims challenge: a token issued after
    ``not_before`` is required (Entra's ``insufficient_claims`` shape, claims base64url JSON)."""
    claims = {"access_token": {"nbf": {"essential": True, "value": str(int(not_before) + 1)}}}
    encoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
    return (
        'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/'
        f'authorize", error="insufficient_claims", claims="{encoded}"'
    )


_PREFIX = "kvemu"
DEFAULT_CLIENT_ID = "00000000-0000-0000-0000-00000000e1e1"
DEFAULT_OBJECT_ID = "00000000-0000-0000-0000-0000000000d1"
_DEFAULT_CLIENT_ID, _DEFAULT_OID = DEFAULT_CLIENT_ID, DEFAULT_OBJECT_ID


@dataclass(frozen=True, slots=True)
class Claims:
    """What a valid token says: who (``client_id``, ``object_id``), for what, and when."""

    client_id: str
    object_id: str
    audience: str
    issued_at: float
    expires_on: int


def _unauthorized(message: str) -> ServiceError:
    return ServiceError(401, "Unauthorized", message)


class TokenIssuer:
    """Signs and verifies the emulator's bearer tokens."""

    def __init__(self, key: bytes | None = None, lifetime_s: int = TOKEN_LIFETIME_S) -> None:
        self._key = key or secrets.token_bytes(32)
        self.lifetime_s = lifetime_s

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
        self,
        audience: str = RESOURCE,
        lifetime_s: int | None = None,
        *,
        client_id: str = _DEFAULT_CLIENT_ID,
        object_id: str = _DEFAULT_OID,
    ) -> AccessTokenInfo:
        """A new token for ``audience`` and an identity, valid ``lifetime_s`` seconds (the
        issuer's configured lifetime when ``None``)."""
        now = time.time()
        expires_on = int(now) + (self.lifetime_s if lifetime_s is None else lifetime_s)
        doc = {
            "exp": expires_on,
            "iat": now,
            "aud": audience,
            "appid": client_id,
            "oid": object_id,
            "jti": secrets.token_hex(8),
        }
        payload = b64url_encode(json.dumps(doc, separators=(",", ":")).encode())
        return AccessTokenInfo(f"{_PREFIX}.{payload}.{self._sign(payload)}", expires_on)

    def check(self, authorization: str | None) -> Claims:
        """The claims of the ``Authorization`` header's token, or 401 ``Unauthorized`` saying
        why: missing or foreign (real AKV10000 text), wrong audience (AKV10022), expired."""
        missing = _unauthorized("AKV10000: Request is missing a Bearer or PoP token.")
        if not authorization:
            raise missing
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            raise missing
        parts = token.strip().split(".")
        # Our tokens are ASCII; anything else is foreign (and would not encode for the HMAC).
        if len(parts) != 3 or parts[0] != _PREFIX or not token.isascii():
            raise missing
        if not hmac.compare_digest(self._sign(parts[1]), parts[2]):
            raise missing
        try:
            doc = json.loads(b64url_decode(parts[1]))
            claims = Claims(
                str(doc.get("appid", _DEFAULT_CLIENT_ID)),
                str(doc.get("oid", _DEFAULT_OID)),
                str(doc["aud"]),
                float(doc.get("iat", 0)),
                int(doc["exp"]),
            )
        except (ValueError, KeyError, TypeError):
            raise missing from None
        if claims.audience.rstrip("/") != RESOURCE:
            raise _unauthorized(
                f"AKV10022: Invalid audience. Expected {RESOURCE}, found: {claims.audience}."
            )
        if claims.expires_on <= time.time():
            raise _unauthorized("AKV10032: The access token has expired.")
        return claims

    def verify(self, authorization: str | None) -> bool:
        """True if the ``Authorization`` header carries a valid token from this issuer."""
        try:
            self.check(authorization)
        except ServiceError:
            return False
        return True


def _audience(scopes: tuple[str, ...]) -> str:
    scope = scopes[0] if scopes else RESOURCE
    return scope.removesuffix("/.default")


class EmulatorCredential:
    """An ``AsyncTokenCredential`` whose tokens the emulator accepts (valid 24 h).

    Holds no I/O resources; ``close()`` and ``async with`` exist for the protocol.
    """

    def __init__(
        self,
        issuer: TokenIssuer,
        client_id: str = _DEFAULT_CLIENT_ID,
        object_id: str = _DEFAULT_OID,
    ) -> None:
        self._issuer = issuer
        self._client_id, self._object_id = client_id, object_id

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
        info = self._issuer.issue(
            _audience(scopes), client_id=self._client_id, object_id=self._object_id
        )
        return AccessToken(info.token, info.expires_on)

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        return self._issuer.issue(
            _audience(scopes), client_id=self._client_id, object_id=self._object_id
        )

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

    def __init__(
        self,
        issuer: TokenIssuer,
        client_id: str = _DEFAULT_CLIENT_ID,
        object_id: str = _DEFAULT_OID,
    ) -> None:
        self._issuer = issuer
        self._client_id, self._object_id = client_id, object_id

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
        info = self._issuer.issue(
            _audience(scopes), client_id=self._client_id, object_id=self._object_id
        )
        return AccessToken(info.token, info.expires_on)

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        return self._issuer.issue(
            _audience(scopes), client_id=self._client_id, object_id=self._object_id
        )

    def close(self) -> None:
        return None

    def __enter__(self) -> EmulatorSyncCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def identity_app(
    issuer: TokenIssuer, identity_header: str, identities: AccessPolicies
) -> web.Application:
    """App Service style managed-identity endpoint (api-version 2019-08-01) at ``/msi/token``.

    ``GET /msi/token?api-version=2019-08-01&resource=R[&client_id=C]`` with ``X-IDENTITY-HEADER``
    answers ``{"access_token", "expires_on", "resource", "token_type", "client_id"}`` like App
    Service, for identity C (the default identity without ``client_id``); an identity that was
    not declared is 400.
    """

    async def token(request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("X-IDENTITY-HEADER", ""), identity_header):
            return _msi_error(401, "The X-IDENTITY-HEADER header is missing or wrong.")
        if request.query.get("api-version") != "2019-08-01":
            return _msi_error(400, "Unsupported api-version; use 2019-08-01.")
        resource = request.query.get("resource", "")
        if not resource:
            return _msi_error(400, "The resource query parameter is required.")
        asked = request.query.get("client_id")
        identity = identities.find(asked)
        if identity is None:
            return _msi_error(
                400, f"No managed identity with client_id {asked} is assigned to this resource."
            )
        info = issuer.issue(
            _audience((resource,)), client_id=identity.client_id, object_id=identity.object_id
        )
        body = {
            "access_token": info.token,
            "expires_on": str(info.expires_on),  # App Service sends it as a string
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/msi/token", token)
    return app


def _msi_error(status: int, message: str) -> web.Response:
    return web.json_response({"statusCode": status, "message": message}, status=status)
