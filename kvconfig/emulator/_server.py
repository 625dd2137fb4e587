"""The vault API over aiohttp: one catch-all handler, Key Vault's routes, operations, headers.

Vaults are told apart by the local port a request arrived on (each vault has its own listening
socket), and ids are built from the request's authority, so the SDK's id parsing works.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from kvconfig.emulator._access import AccessPolicies
from kvconfig.emulator._auth import CHALLENGE, TokenIssuer, claims_challenge
from kvconfig.emulator._errors import ServiceError
from kvconfig.emulator._faults import Fault, Faults
from kvconfig.emulator._http import expect_continue
from kvconfig.emulator._store import Store, b64url_decode, b64url_encode
from kvconfig.emulator._wire import (
    MAX_BODY_BYTES,
    Call,
    Reset,
    attrs_of,
    deleted_doc,
    item_doc,
    json_body,
    json_response,
    opt_str,
    paginate,
    tags_of,
)

__all__ = ["API_VERSIONS", "RequestRecord", "VaultServer"]

_log = logging.getLogger("kvconfig.emulator")

API_VERSIONS = frozenset(
    {"2026-04-01", "2025-07-01", "7.6", "7.5", "7.4", "7.3", "7.2", "7.1", "7.0", "2016-10-01"}
)
LATEST_API_VERSION = "2026-04-01"
SERVICE_VERSION = "1.9.2800.1"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One served vault API request (challenges and injected faults included).

    ``status`` is the final HTTP status, or 0 when the connection was reset on purpose.
    ``time`` is ``time.monotonic()`` when the request arrived; ``duration_ms`` how long it took
    to answer; ``wall_time`` is ``time.time()`` when it arrived. ``peer`` is the client's
    ``host:port``: one value per connection, so counting them counts connections.
    """

    method: str
    path: str
    status: int
    vault: str
    query: dict[str, str] = field(default_factory=dict)
    time: float = 0.0
    duration_ms: float = 0.0
    wall_time: float = 0.0
    peer: str = ""


Handler = Callable[[Call], Awaitable[web.Response]]


# -- operations (reference section 3) -----------------------------------------------------------


class VaultServer:
    """The aiohttp application serving every vault of one emulator."""

    def __init__(
        self,
        store: Store,
        faults: Faults,
        issuer: TokenIssuer,
        vault_for_port: dict[int, str],
        requests: list[RequestRecord],
        on_request: Callable[[RequestRecord], None] | None = None,
        access: AccessPolicies | None = None,
    ) -> None:
        self._store = store
        self._faults = faults
        self._issuer = issuer
        self._vault_for_port = vault_for_port
        self._requests = requests
        self._on_request = on_request
        self._access = access or AccessPolicies()

    def app(self) -> web.Application:
        # Every request is the vault API's to answer: aiohttp's router would send a text/plain
        # 404 for targets its patterns miss ("*"; "." does not match a decoded "%0A").
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._every_request])
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._handle, expect_handler=expect_continue)
        return app

    @web.middleware
    async def _every_request(self, request: web.Request, handler: Any) -> web.StreamResponse:
        return await self._handle(request)

    def _vault(self, request: web.Request) -> str:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if sockname else 0
        return self._vault_for_port.get(port, "")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        wall = time.time()
        vault = self._vault(request)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peer = f"{peername[0]}:{peername[1]}" if peername else ""
        status = 0
        try:
            response = await self._serve(request, vault)
            status = response.status
            return response
        except Reset:
            if request.transport is not None:
                request.transport.abort()
            # aiohttp's write to the aborted transport fails quietly (a raise would be logged
            # as a handler error); the log records status 0.
            return web.Response(status=500)
        finally:
            record = RequestRecord(
                request.method,
                request.path,
                status,
                vault,
                dict(request.query),
                arrived,
                (time.monotonic() - arrived) * 1000,
                wall,
                peer,
            )
            self._requests.append(record)
            if self._on_request is not None:
                try:
                    self._on_request(record)
                except Exception:  # a broken logger must not break serving
                    _log.exception("request logger failed")

    async def _serve(self, request: web.Request, vault: str) -> web.Response:
        try:
            delay = self._faults.delay_s()
            if delay > 0:
                await asyncio.sleep(delay)
            fault = self._faults.before_auth()
            if fault is not None:
                return self._fault(request, fault)
            # The challenge is decided on the header alone, before routing or reading the body.
            claims = self._issuer.check(request.headers.get("Authorization"))
            rejected = self._faults.token_rejection(claims.client_id, claims.issued_at)
            if rejected == "expired":
                raise ServiceError(401, "Unauthorized", "AKV10032: The access token has expired.")
            if rejected == "claims":
                raise ServiceError(
                    401,
                    "Unauthorized",
                    "AKV10032: The access token was revoked; claims are required.",
                    challenge=claims_challenge(claims.issued_at),
                )
            if rejected is not None:
                raise ServiceError(401, "Unauthorized", "AKV10032: The access token was revoked.")
            call, handler, is_create = self._route(request, vault)
            self._access.authorize(claims.client_id, vault, _PERMISSION[handler.__name__])
            if self._faults.throttled(vault, is_create):
                return self._error(request, ServiceError.throttled())
            response = await handler(call)
            body = response.body
            garbled = (
                self._faults.garble(response.status, bytes(body))
                if isinstance(body, bytes | bytearray)
                else None
            )
            if garbled is not None:
                response.body = garbled
        except ServiceError as exc:
            return self._error(request, exc)
        except (Reset, asyncio.CancelledError):
            raise
        except Exception:  # never a traceback to the client; log it for the developer
            _log.exception("emulator bug while serving %s %s", request.method, request.path)
            return self._error(request, ServiceError.for_status(500))
        self._headers(request, response)
        return response

    # -- responses -----------------------------------------------------------------------------

    def _headers(self, request: web.Request, response: web.Response) -> None:
        response.headers["x-ms-request-id"] = str(uuid.uuid4())
        response.headers["x-ms-keyvault-service-version"] = SERVICE_VERSION
        response.headers["x-ms-keyvault-region"] = "local"
        response.headers["Cache-Control"] = "no-cache"
        client_id = request.headers.get("x-ms-client-request-id")
        if client_id:
            response.headers["x-ms-client-request-id"] = client_id

    def _error(
        self, request: web.Request, error: ServiceError, retry_after: float | None = None
    ) -> web.Response:
        response = json_response(error.body(), status=error.status)
        response.headers["x-ms-error-code"] = error.code
        if error.status == 401:
            response.headers["WWW-Authenticate"] = error.challenge or CHALLENGE
        if isinstance(error, _MethodNotAllowed):
            response.headers["Allow"] = ", ".join(error.allowed)
        if retry_after is not None:
            response.headers["Retry-After"] = f"{retry_after:g}"
        self._headers(request, response)
        return response

    def _fault(self, request: web.Request, fault: Fault) -> web.Response:
        if fault.status == "reset":
            raise Reset
        return self._error(request, ServiceError.for_status(fault.status), fault.retry_after)

    # -- routing -------------------------------------------------------------------------------

    def _route(self, request: web.Request, vault: str) -> tuple[Call, Handler, bool]:
        api_version = request.query.get("api-version")
        if not api_version:
            raise ServiceError.bad_parameter("The api-version query parameter is required.")
        if api_version not in API_VERSIONS:
            raise ServiceError.bad_parameter(
                f"The specified version ({api_version}) is not recognized. Consider using the "
                f"latest supported version ({LATEST_API_VERSION})."
            )
        call = Call(request, vault, f"https://{request.host}", api_version)
        parts = [unquote(p) for p in request.rel_url.raw_path.split("/")[1:]]
        method = request.method
        table: dict[str, Handler]
        is_create = False
        match parts:
            case ["secrets"] | ["secrets", ""]:
                table = {"GET": self._list}
            case ["secrets", "restore"] if method == "POST":
                table = {"POST": self._restore}
            case ["secrets", name]:
                call.name = name
                table = {"GET": self._get, "PUT": self._set, "PATCH": self._update}
                table["DELETE"] = self._delete
                is_create = method == "PUT"
            case ["secrets", name, "versions"]:
                call.name = name
                table = {"GET": self._list_versions}
            case ["secrets", name, "backup"]:
                call.name = name
                table = {"POST": self._backup}
            case ["secrets", name, version]:
                call.name, call.version = name, version
                table = {"GET": self._get, "PATCH": self._update}
            case ["deletedsecrets"] | ["deletedsecrets", ""]:
                table = {"GET": self._list_deleted}
            case ["deletedsecrets", name]:
                call.name = name
                table = {"GET": self._get_deleted, "DELETE": self._purge}
            case ["deletedsecrets", name, "recover"]:
                call.name = name
                table = {"POST": self._recover}
            case _:
                raise ServiceError(
                    404, "NotFound", f"The requested resource {request.path} was not found."
                )
        handler = table.get(method)
        if handler is None:
            raise _MethodNotAllowed(method, sorted(table))
        return call, handler, is_create

    # -- handlers ------------------------------------------------------------------------------

    async def _commit(self) -> None:
        await self._store.commit_async()

    async def _get(self, call: Call) -> web.Response:
        secret, v = self._store.get_value(call.vault, call.name, call.version)
        return json_response(item_doc(call, secret, v, versioned=True, value=True))

    async def _set(self, call: Call) -> web.Response:
        body = await json_body(call.request)
        value = body.get("value")
        if not isinstance(value, str):
            raise ServiceError.bad_parameter("Property 'value' is required and must be a string.")
        attrs = attrs_of(body)
        secret, v = self._store.set(
            call.vault,
            call.name,
            value,
            content_type=opt_str(body, "contentType"),
            tags=tags_of(body),
            enabled=attrs.get("enabled", True),
            not_before=attrs.get("not_before"),
            expires=attrs.get("expires"),
        )
        await self._commit()
        return json_response(item_doc(call, secret, v, versioned=True, value=True))

    async def _update(self, call: Call) -> web.Response:
        body = await json_body(call.request)
        kwargs: dict[str, Any] = attrs_of(body)
        if "contentType" in body:
            kwargs["content_type"] = opt_str(body, "contentType")
        if "tags" in body:
            kwargs["tags"] = tags_of(body)
        secret, v = self._store.update(call.vault, call.name, call.version, **kwargs)
        await self._commit()
        return json_response(item_doc(call, secret, v, versioned=True))

    async def _delete(self, call: Call) -> web.Response:
        secret = self._store.delete(call.vault, call.name)
        await self._commit()
        return json_response(deleted_doc(call, secret, versioned=True))

    async def _list(self, call: Call) -> web.Response:
        secrets = self._store.list_secrets(call.vault)
        page, next_link = paginate(call, [(s.name.lower(), s) for s in secrets])
        items = [item_doc(call, s, s.latest, versioned=False) for s in page]
        return json_response({"value": items, "nextLink": next_link})

    async def _list_versions(self, call: Call) -> web.Response:
        secret, versions = self._store.list_versions(call.vault, call.name)
        page, next_link = paginate(call, [(f"{i:08d}", v) for i, v in enumerate(versions)])
        items = [item_doc(call, secret, v, versioned=True) for v in page if secret is not None]
        return json_response({"value": items, "nextLink": next_link})

    async def _list_deleted(self, call: Call) -> web.Response:
        secrets = self._store.list_deleted(call.vault)
        page, next_link = paginate(call, [(s.name.lower(), s) for s in secrets])
        items = [deleted_doc(call, s, versioned=False) for s in page]
        return json_response({"value": items, "nextLink": next_link})

    async def _get_deleted(self, call: Call) -> web.Response:
        secret = self._store.get_deleted(call.vault, call.name)
        return json_response(deleted_doc(call, secret, versioned=True))

    async def _purge(self, call: Call) -> web.Response:
        self._store.purge(call.vault, call.name)
        await self._commit()
        return web.Response(status=204)

    async def _recover(self, call: Call) -> web.Response:
        secret = self._store.recover(call.vault, call.name)
        await self._commit()
        return json_response(item_doc(call, secret, secret.latest, versioned=True))

    async def _backup(self, call: Call) -> web.Response:
        blob = self._store.backup(call.vault, call.name)
        return json_response({"value": b64url_encode(blob)})

    async def _restore(self, call: Call) -> web.Response:
        body = await json_body(call.request)
        value = body.get("value")
        if not isinstance(value, str):
            raise ServiceError.bad_parameter("Property 'value' is required and must be a string.")
        try:
            blob = b64url_decode(value)
        except ValueError:
            raise ServiceError.bad_parameter("Backup blob could not be decrypted.") from None
        secret = self._store.restore(call.vault, blob)
        await self._commit()
        return json_response(item_doc(call, secret, secret.latest, versioned=True))


# The access-policy permission each operation needs (Key Vault's REST reference: reading a
# deleted secret needs `list`).
_PERMISSION = {
    "_get": "get",
    "_set": "set",
    "_update": "set",
    "_delete": "delete",
    "_list": "list",
    "_list_versions": "list",
    "_list_deleted": "list",
    "_get_deleted": "get",  # the REST reference: get_deleted_secret needs secrets/get
    "_purge": "purge",
    "_recover": "recover",
    "_backup": "backup",
    "_restore": "restore",
}


class _MethodNotAllowed(ServiceError):
    def __init__(self, method: str, allowed: list[str]) -> None:
        super().__init__(
            405, "MethodNotAllowed", f"The HTTP method {method} is not allowed on this resource."
        )
        self.allowed = allowed
