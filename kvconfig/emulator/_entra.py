"""A stand-in for Entra ID's token endpoint, for the service-principal flow
(``AZURE_CLIENT_ID``, ``AZURE_CLIENT_SECRET``, ``AZURE_TENANT_ID`` read by
``EnvironmentCredential``).

Why not ``AZURE_AUTHORITY_HOST=https://127.0.0.1:PORT``: azure-identity hands the authority to
MSAL without ``instance_discovery=False`` (``EnvironmentCredential`` reads no variable for it), and
MSAL validates any authority host not on its list of Microsoft's hosts by asking
``https://login.microsoftonline.com/common/discovery/instance``: that needs the internet, and the
real service answers ``invalid_instance`` for a loopback host. So instead the emulator's HTTPS
proxy sends ``login.microsoftonline.com`` (well-known: MSAL skips instance discovery) here, with a
certificate from the emulator's CA, once a service principal has been declared. The default
``AZURE_AUTHORITY_HOST`` is kept; only ``client_credentials`` with a client secret is served.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from kvconfig.emulator._access import AccessPolicies
from kvconfig.emulator._auth import TokenIssuer

__all__ = ["ENTRA_HOST", "entra_app"]

ENTRA_HOST = "login.microsoftonline.com"
_BASE = f"https://{ENTRA_HOST}"


def _aad_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": description, "error_codes": []}, status=status
    )


def entra_app(issuer: TokenIssuer, identities: AccessPolicies) -> web.Application:
    """OpenID configuration and the v2.0 token endpoint of any tenant."""

    async def openid_configuration(request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        doc: dict[str, Any] = {
            "issuer": f"{_BASE}/{tenant}/v2.0",
            "authorization_endpoint": f"{_BASE}/{tenant}/oauth2/v2.0/authorize",
            "token_endpoint": f"{_BASE}/{tenant}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{_BASE}/{tenant}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{_BASE}/{tenant}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "tenant_region_scope": "WW",
        }
        return web.json_response(doc)

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        grant = form.get("grant_type")
        if grant != "client_credentials":
            return _aad_error(
                400,
                "unsupported_grant_type",
                "The emulator's Entra endpoint serves only client_credentials with a secret.",
            )
        client_id = str(form.get("client_id", ""))
        identity = identities.find(client_id) if client_id else None
        if identity is None or identity.client_secret is None:
            return _aad_error(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
                "directory. (No service principal with this client id is declared.)",
            )
        secret = str(form.get("client_secret", ""))
        if not hmac.compare_digest(secret.encode(), identity.client_secret.encode()):
            return _aad_error(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in "
                "the request is the client secret value, not the client secret ID.",
            )
        scope = str(form.get("scope", "")).split(" ")[0]
        info = issuer.issue(
            scope.removesuffix("/.default"),
            client_id=identity.client_id,
            object_id=identity.object_id,
        )
        lifetime = issuer.lifetime_s
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": info.token,
            }
        )

    app = web.Application()
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    return app
