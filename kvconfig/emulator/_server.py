"""The vault API over aiohttp: one catch-all handler, Key Vault's routes, shapes and headers.

Vaults are told apart by the local port a request arrived on (each vault has its own listening
socket), and ids are built from the request's authority, so the SDK's id parsing works.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote

from aiohttp import HttpVersion11, http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from kvconfig.emulator._auth import CHALLENGE, TokenIssuer
from kvconfig.emulator._errors import ServiceError
from kvconfig.emulator._faults import Fault, Faults
from kvconfig.emulator._store import (
    RECOVERABLE_DAYS,
    RECOVERY_LEVEL,
    Secret,
    SecretVersion,
    Store,
    b64url_decode,
    b64url_encode,
)

__all__ = ["API_VERSIONS", "MAX_PAGE_SIZE", "RequestRecord", "VaultRunner", "VaultServer"]

_log = logging.getLogger("kvconfig.emulator")

API_VERSIONS = frozenset(
    {"2026-04-01", "2025-07-01", "7.6", "7.5", "7.4", "7.3", "7.2", "7.1", "7.0", "2016-10-01"}
)
LATEST_API_VERSION = "2026-04-01"
MAX_PAGE_SIZE = 25
MAX_BODY_BYTES = 1024 * 1024
SERVICE_VERSION = "1.9.2800.1"
# api-versions before `recoverableDays` existed on SecretAttributes.
_NO_RECOVERABLE_DAYS = frozenset({"7.0", "2016-10-01"})


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One served vault API request (challenges and injected faults included).

    ``status`` is the final HTTP status, or 0 when the connection was reset on purpose.
    ``time`` is ``time.monotonic()`` when the request arrived. ``peer`` is the client's
    ``host:port``: one value per connection, so counting them counts connections.
    """

    method: str
    path: str
    status: int
    vault: str
    query: dict[str, str] = field(default_factory=dict)
    time: float = 0.0
    peer: str = ""


class _Reset(Exception):
    """Abort the connection instead of answering."""


Handler = Callable[["_Call"], Awaitable[web.Response]]
T = TypeVar("T")


@dataclass(slots=True)
class _Call:
    """A routed request: the vault, path parameters and query."""

    request: web.Request
    vault: str
    base: str
    api_version: str
    name: str = ""
    version: str = ""


# -- JSON shapes (reference section 4) ----------------------------------------------------------


def _attributes(v: SecretVersion, api_version: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {"enabled": v.enabled}
    if v.not_before is not None:
        attrs["nbf"] = v.not_before
    if v.expires is not None:
        attrs["exp"] = v.expires
    attrs["created"] = v.created
    attrs["updated"] = v.updated
    if api_version not in _NO_RECOVERABLE_DAYS:
        attrs["recoverableDays"] = RECOVERABLE_DAYS
    attrs["recoveryLevel"] = RECOVERY_LEVEL
    return attrs


def _item(
    call: _Call, secret: Secret, v: SecretVersion, *, versioned: bool, value: bool = False
) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if value:
        doc["value"] = v.value
    suffix = f"/{v.version}" if versioned else ""
    doc["id"] = f"{call.base}/secrets/{secret.name}{suffix}"
    if v.content_type is not None:
        doc["contentType"] = v.content_type
    doc["attributes"] = _attributes(v, call.api_version)
    if v.tags is not None:
        doc["tags"] = dict(v.tags)
    return doc


def _deleted(call: _Call, secret: Secret, *, versioned: bool) -> dict[str, Any]:
    doc = {
        "recoveryId": f"{call.base}/deletedsecrets/{secret.name}",
        "deletedDate": secret.deleted_date,
        "scheduledPurgeDate": secret.scheduled_purge,
    }
    doc.update(_item(call, secret, secret.latest, versioned=versioned))
    return doc


# -- request parsing ----------------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ServiceError(
            415,
            "UnsupportedMediaType",
            "The request content type must be application/json.",
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ServiceError(
            413,
            "RequestEntityTooLarge",
            f"The request body exceeds the maximum allowed size of {MAX_BODY_BYTES} bytes.",
        ) from None
    except web.RequestPayloadError:  # bad Content-Encoding or chunk framing
        raise ServiceError.bad_parameter(
            "The request body could not be read: it does not match its framing or Content-Encoding."
        ) from None
    except ConnectionError:  # the client hung up mid-body: nobody to answer, nothing to log
        raise _Reset from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        raise ServiceError.bad_parameter("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ServiceError.bad_parameter("The request body must be a JSON object.")
    return body


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ServiceError.bad_parameter(f"Property '{key}' must be a string.")
    return value


def _tags(body: dict[str, Any]) -> dict[str, str] | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise ServiceError.bad_parameter("Property 'tags' must map strings to strings.")
    return tags


def _attrs(body: dict[str, Any]) -> dict[str, Any]:
    attrs = body.get("attributes")
    if attrs is None:
        return {}
    if not isinstance(attrs, dict):
        raise ServiceError.bad_parameter("Property 'attributes' must be an object.")
    out: dict[str, Any] = {}
    if "enabled" in attrs and attrs["enabled"] is not None:
        if not isinstance(attrs["enabled"], bool):
            raise ServiceError.bad_parameter("Attribute 'enabled' must be a boolean.")
        out["enabled"] = attrs["enabled"]
    for key, arg in (("nbf", "not_before"), ("exp", "expires")):
        if key in attrs:
            value = attrs[key]
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (isinstance(value, float) and not math.isfinite(value))  # JSON Infinity/NaN
            ):
                raise ServiceError.bad_parameter(f"Attribute '{key}' must be Unix seconds.")
            out[arg] = None if value is None else int(value)
    return out


def _page_size(call: _Call) -> int:
    raw = call.request.query.get("maxresults")
    if raw is None:
        return MAX_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        # The spec bounds maxresults to 1..25; refusing (not clamping) keeps code that passes here
        # from relying on bigger pages a real vault may not give.
        raise ServiceError.bad_parameter(
            f"Invalid maxresults value '{raw}': it must be an integer from 1 to {MAX_PAGE_SIZE}."
        )
    return size


def _page(call: _Call, items: list[tuple[str, T]]) -> tuple[list[T], str | None]:
    """Slice ``(sort key, item)`` pairs after the ``$skiptoken`` marker; return the page and the
    absolute nextLink (or None)."""
    size = _page_size(call)
    token = call.request.query.get("$skiptoken")
    start = 0
    if token:
        try:
            marker = json.loads(b64url_decode(token))["NextMarker"]
            if not isinstance(marker, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise ServiceError.bad_parameter("The $skiptoken is invalid.") from None
        while start < len(items) and items[start][0] <= marker:
            start += 1
    page = items[start : start + size]
    if start + size >= len(items):
        return [item for _, item in page], None
    next_token = b64url_encode(json.dumps({"NextMarker": page[-1][0]}).encode())
    next_link = (
        f"{call.base}{call.request.path}?api-version={call.api_version}"
        f"&$skiptoken={next_token}&maxresults={size}"
    )
    return [item for _, item in page], next_link


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
    ) -> None:
        self._store = store
        self._faults = faults
        self._issuer = issuer
        self._vault_for_port = vault_for_port
        self._requests = requests

    def app(self) -> web.Application:
        # Every request is the vault API's to answer: aiohttp's router would send a text/plain
        # 404 for targets its patterns miss ("*"; "." does not match a decoded "%0A").
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._every_request])
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._handle, expect_handler=_expect)
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
        vault = self._vault(request)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peer = f"{peername[0]}:{peername[1]}" if peername else ""
        status = 0
        try:
            response = await self._serve(request, vault)
            status = response.status
            return response
        except _Reset:
            if request.transport is not None:
                request.transport.abort()
            # aiohttp's write to the aborted transport fails quietly (a raise would be logged
            # as a handler error); the log records status 0.
            return web.Response(status=500)
        finally:
            self._requests.append(
                RequestRecord(
                    request.method, request.path, status, vault, dict(request.query), arrived, peer
                )
            )

    async def _serve(self, request: web.Request, vault: str) -> web.Response:
        try:
            delay = self._faults.delay_s()
            if delay > 0:
                await asyncio.sleep(delay)
            fault = self._faults.before_auth()
            if fault is not None:
                return self._fault(request, fault)
            # The challenge is decided on the header alone, before routing or reading the body.
            if not self._issuer.verify(request.headers.get("Authorization")):
                return self._error(request, ServiceError.unauthorized())
            call, handler, is_create = self._route(request, vault)
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
        except (_Reset, asyncio.CancelledError):
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
        response = _json(error.body(), status=error.status)
        response.headers["x-ms-error-code"] = error.code
        if error.status == 401:
            response.headers["WWW-Authenticate"] = CHALLENGE
        if isinstance(error, _MethodNotAllowed):
            response.headers["Allow"] = ", ".join(error.allowed)
        if retry_after is not None:
            response.headers["Retry-After"] = f"{retry_after:g}"
        self._headers(request, response)
        return response

    def _fault(self, request: web.Request, fault: Fault) -> web.Response:
        if fault.status == "reset":
            raise _Reset
        return self._error(request, ServiceError.for_status(fault.status), fault.retry_after)

    # -- routing -------------------------------------------------------------------------------

    def _route(self, request: web.Request, vault: str) -> tuple[_Call, Handler, bool]:
        api_version = request.query.get("api-version")
        if not api_version:
            raise ServiceError.bad_parameter("The api-version query parameter is required.")
        if api_version not in API_VERSIONS:
            raise ServiceError.bad_parameter(
                f"The specified version ({api_version}) is not recognized. Consider using the "
                f"latest supported version ({LATEST_API_VERSION})."
            )
        call = _Call(request, vault, f"https://{request.host}", api_version)
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

    async def _get(self, call: _Call) -> web.Response:
        secret, v = self._store.get_value(call.vault, call.name, call.version)
        return _json(_item(call, secret, v, versioned=True, value=True))

    async def _set(self, call: _Call) -> web.Response:
        body = await _json_body(call.request)
        value = body.get("value")
        if not isinstance(value, str):
            raise ServiceError.bad_parameter("Property 'value' is required and must be a string.")
        attrs = _attrs(body)
        secret, v = self._store.set(
            call.vault,
            call.name,
            value,
            content_type=_opt_str(body, "contentType"),
            tags=_tags(body),
            enabled=attrs.get("enabled", True),
            not_before=attrs.get("not_before"),
            expires=attrs.get("expires"),
        )
        await self._commit()
        return _json(_item(call, secret, v, versioned=True, value=True))

    async def _update(self, call: _Call) -> web.Response:
        body = await _json_body(call.request)
        kwargs: dict[str, Any] = _attrs(body)
        if "contentType" in body:
            kwargs["content_type"] = _opt_str(body, "contentType")
        if "tags" in body:
            kwargs["tags"] = _tags(body)
        secret, v = self._store.update(call.vault, call.name, call.version, **kwargs)
        await self._commit()
        return _json(_item(call, secret, v, versioned=True))

    async def _delete(self, call: _Call) -> web.Response:
        secret = self._store.delete(call.vault, call.name)
        await self._commit()
        return _json(_deleted(call, secret, versioned=True))

    async def _list(self, call: _Call) -> web.Response:
        secrets = self._store.list_secrets(call.vault)
        page, next_link = _page(call, [(s.name.lower(), s) for s in secrets])
        items = [_item(call, s, s.latest, versioned=False) for s in page]
        return _json({"value": items, "nextLink": next_link})

    async def _list_versions(self, call: _Call) -> web.Response:
        secret, versions = self._store.list_versions(call.vault, call.name)
        page, next_link = _page(call, [(f"{i:08d}", v) for i, v in enumerate(versions)])
        items = [_item(call, secret, v, versioned=True) for v in page]
        return _json({"value": items, "nextLink": next_link})

    async def _list_deleted(self, call: _Call) -> web.Response:
        secrets = self._store.list_deleted(call.vault)
        page, next_link = _page(call, [(s.name.lower(), s) for s in secrets])
        items = [_deleted(call, s, versioned=False) for s in page]
        return _json({"value": items, "nextLink": next_link})

    async def _get_deleted(self, call: _Call) -> web.Response:
        secret = self._store.get_deleted(call.vault, call.name)
        return _json(_deleted(call, secret, versioned=True))

    async def _purge(self, call: _Call) -> web.Response:
        self._store.purge(call.vault, call.name)
        await self._commit()
        return web.Response(status=204)

    async def _recover(self, call: _Call) -> web.Response:
        secret = self._store.recover(call.vault, call.name)
        await self._commit()
        return _json(_item(call, secret, secret.latest, versioned=True))

    async def _backup(self, call: _Call) -> web.Response:
        blob = self._store.backup(call.vault, call.name)
        return _json({"value": b64url_encode(blob)})

    async def _restore(self, call: _Call) -> web.Response:
        body = await _json_body(call.request)
        value = body.get("value")
        if not isinstance(value, str):
            raise ServiceError.bad_parameter("Property 'value' is required and must be a string.")
        try:
            blob = b64url_decode(value)
        except ValueError:
            raise ServiceError.bad_parameter("Backup blob could not be decrypted.") from None
        secret = self._store.restore(call.vault, blob)
        await self._commit()
        return _json(_item(call, secret, secret.latest, versioned=True))


async def _expect(request: web.Request) -> None:
    """Answer ``Expect: 100-continue``; ignore any other value (RFC 9110 allows it) so the request
    gets a normal answer, where aiohttp's default handler would send a text/plain 417."""
    if request.version == HttpVersion11 and request.headers["Expect"].lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer proper has not started


# Why a request could not be parsed, by aiohttp's exception (subclasses first). The text is ours:
# aiohttp's message echoes the offending input.
_MALFORMED: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "a request line or header field is too long"),
    (http_exceptions.BadHttpMethod, "the HTTP method is not supported"),
    (http_exceptions.BadStatusLine, "the request line is malformed"),
    (http_exceptions.InvalidHeader, "a header field is malformed"),
    (http_exceptions.PayloadEncodingError, "the body does not match its framing or encoding"),
)


class _Protocol(RequestHandler):
    """aiohttp's connection handler, answering a request it cannot parse in Azure's error shape.

    aiohttp itself answers those text/plain, echoing the input, and logs each as an error with a
    traceback; here they are a 400 ``BadParameter`` like every other refusal, logged at debug.
    A body that turns out malformed after the answer (aiohttp drains unread bodies) is the
    client's fault too: debug, not an error; aiohttp closes that connection.
    """

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if isinstance(kw.get("exc_info"), web.RequestPayloadError | http_exceptions.BadHttpMessage):
            self.logger.debug(*args, **kw)
        else:
            super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        self.logger.debug("unparseable request from %s: %r", request.remote, exc)
        reason = next((text for cls, text in _MALFORMED if isinstance(exc, cls)), None)
        error = ServiceError(
            status,
            ServiceError.for_status(status).code,
            f"The request is not valid HTTP/1.1: {reason or 'it could not be parsed'}.",
        )
        response = _json(error.body(), status=status)
        response.headers["x-ms-error-code"] = error.code
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class VaultRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparseable requests in Azure's error shape."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds the Server (app handler, request factory, options); only the class that
        # makes each connection's protocol changes. Covered by the hostile-input tests.
        server.__class__ = _Server
        return server


class _MethodNotAllowed(ServiceError):
    def __init__(self, method: str, allowed: list[str]) -> None:
        super().__init__(
            405, "MethodNotAllowed", f"The HTTP method {method} is not allowed on this resource."
        )
        self.allowed = allowed


def _json(doc: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(doc, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )
