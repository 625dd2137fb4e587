"""Ready-made Event Grid webhook endpoints: an ASGI app and an aiohttp handler.

Both answer what Azure Event Grid sends to a webhook and pass Key Vault's events on::

    from kvconfig.integrations.eventgrid import EventGridASGI, aiohttp_handler

    app.mount("/events", EventGridASGI(live_settings, secret=os.environ["EVENTS_SECRET"]))
    web_app.router.add_route("*", "/events", aiohttp_handler(live_settings, secret=...))

What a request gets:

- Delivery secret, when ``secret=`` is given (one string, or several while rotating): the query
  parameter ``secret_param`` (default ``code``) or an ``Authorization: Bearer <secret>`` header
  (an Event Grid delivery attribute) must match, compared in constant time, on every request
  including the handshakes; otherwise 401 with no detail.
- ``OPTIONS`` with ``WebHook-Request-Origin`` (CloudEvents abuse protection): 200 with
  ``WebHook-Allowed-Origin`` echoing it (and ``WebHook-Allowed-Rate: *``).
- ``POST`` of a ``Microsoft.EventGrid.SubscriptionValidationEvent``: 200
  ``{"validationResponse": <validationCode>}``.
- ``POST`` of events (Event Grid list, CloudEvent, CloudEvents batch, or binary-mode CloudEvent
  with ``ce-*`` headers): parsed by :func:`kvconfig._refresh._push.parse_events` and handed as a
  list of ``SecretEvent`` to ``target.notify(events)`` of every target (anything with such a
  method: ``LiveSettings``, ``PushScheduler``; an awaitable result is awaited), then 200. A body
  that is not events: 400 (Event Grid does not retry it); over ``max_body`` bytes: 413; a target
  raising: 500 (Event Grid retries; re-reads coalesce, so a repeat is harmless). Other methods:
  405.

``notify()`` must return quickly and do no I/O (the contract of ``PushScheduler.notify``): the
endpoint answers Event Grid only after every target returned.

No dependency beyond kvconfig's own: the ASGI app is raw ASGI (any ASGI server or framework
that mounts ASGI apps); :func:`aiohttp_handler` uses aiohttp, already a dependency. Serving the
ASGI app standalone needs a server such as uvicorn (extra ``kvconfig[eventgrid]``).
"""

from __future__ import annotations

import contextlib
import hmac
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl

from aiohttp import web

from kvconfig._errors import EventFormatError
from kvconfig._refresh._push import SecretEvent, parse_events, validation_code

__all__ = ["EventGridASGI", "NotifyTarget", "aiohttp_handler"]

logger = logging.getLogger("kvconfig")

MAX_BODY = 1024 * 1024 + 64 * 1024  # Event Grid's 1 MB batch limit, with room for the envelope

_Response = tuple[int, list[tuple[str, str]], bytes]


@runtime_checkable
class NotifyTarget(Protocol):
    """Anything that takes parsed events: ``LiveSettings``, ``PushScheduler``."""

    def notify(self, events: list[SecretEvent]) -> Any: ...


class _Endpoint:
    """The request logic both adapters share: plain values in, a status/headers/body out."""

    def __init__(
        self,
        targets: NotifyTarget | Iterable[NotifyTarget],
        *,
        secret: str | Iterable[str] | None = None,
        secret_param: str = "code",
        max_body: int = MAX_BODY,
    ) -> None:
        self.targets: list[NotifyTarget] = (
            [targets] if isinstance(targets, NotifyTarget) else list(targets)
        )
        if not self.targets or not all(callable(getattr(t, "notify", None)) for t in self.targets):
            raise TypeError("targets must be one or more objects with a notify(events) method")
        if isinstance(secret, str):
            secret = [secret]
        self._secrets = [s.encode() for s in secret] if secret is not None else None
        if self._secrets is not None and not all(self._secrets):
            raise ValueError("a delivery secret must not be empty")
        self.secret_param = secret_param
        self.max_body = max_body

    def __repr__(self) -> str:  # never the secret
        return f"{type(self).__name__}(targets={len(self.targets)}, secret={bool(self._secrets)})"

    def authorized(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        if self._secrets is None:
            return True
        offered: list[bytes] = []
        if self.secret_param in query:
            offered.append(query[self.secret_param].encode())
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            offered.append(auth[7:].strip().encode())
        # Compare against every configured secret, so the time taken says nothing about which.
        ok = False
        for candidate in offered:
            for expected in self._secrets:
                ok |= hmac.compare_digest(candidate, expected)
        return ok

    async def handle(
        self, method: str, headers: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> _Response:
        """``headers`` with lowercase names."""
        if not self.authorized(headers, query):
            return _plain(401, "unauthorized")
        if method == "OPTIONS":
            origin = headers.get("webhook-request-origin")
            if not origin:
                return 200, [("Allow", "OPTIONS, POST")], b""
            return (
                200,
                [
                    ("WebHook-Allowed-Origin", origin),
                    ("WebHook-Allowed-Rate", "*"),
                    ("Allow", "OPTIONS, POST"),
                ],
                b"",
            )
        if method != "POST":
            return 405, [("Allow", "OPTIONS, POST")], b""
        try:
            payload: Any = _binary_cloudevent(headers, body)
            if payload is None:
                payload = json.loads(body)
        except (ValueError, RecursionError):
            return _plain(400, "body is not JSON")
        code = validation_code(payload)
        if code is not None:
            answer = json.dumps({"validationResponse": code}).encode()
            return 200, [("Content-Type", "application/json")], answer
        try:
            events = parse_events(payload)
        except EventFormatError as exc:
            return _plain(400, str(exc))
        for target in self.targets:
            try:
                result = target.notify(events)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                logger.warning(
                    "Event Grid endpoint: %s.notify() failed: %s",
                    type(target).__name__,
                    type(exc).__name__,
                )
                return _plain(500, "notify failed")
        return 200, [], b""


def _plain(status: int, text: str) -> _Response:
    return status, [("Content-Type", "text/plain; charset=utf-8")], text.encode()


def _binary_cloudevent(headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
    """A binary-mode CloudEvent (attributes in ``ce-*`` headers, the body is ``data``)."""
    if "ce-type" not in headers:
        return None
    doc: dict[str, Any] = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
    doc["data"] = json.loads(body) if body.strip() else None
    return doc


class EventGridASGI(_Endpoint):
    """A raw ASGI app answering Event Grid (mount it in FastAPI/Starlette or serve it alone).

    Args:
        targets: One object with ``notify(events)`` or several.
        secret: Delivery secret(s) to require (query parameter ``secret_param`` or bearer).
        secret_param: Query parameter carrying the secret (default ``code``).
        max_body: Largest body accepted (413 beyond).
    """

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            raise RuntimeError(f"EventGridASGI serves http, not {scope['type']!r}")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        body = bytearray()
        too_large = int(headers.get("content-length") or 0) > self.max_body
        while not too_large:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            too_large = len(body) > self.max_body
            if not message.get("more_body", False):
                break
        if too_large:
            response = _plain(413, "body too large")
        else:
            response = await self.handle(scope["method"], headers, query, bytes(body))
        status, extra, payload = response
        raw_headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in extra]
        raw_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})


def aiohttp_handler(
    targets: NotifyTarget | Iterable[NotifyTarget],
    *,
    secret: str | Iterable[str] | None = None,
    secret_param: str = "code",
    max_body: int = MAX_BODY,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp request handler answering Event Grid; route it for ``OPTIONS`` and ``POST``
    (``router.add_route("*", path, handler)``). Arguments as for :class:`EventGridASGI`."""
    endpoint = _Endpoint(targets, secret=secret, secret_param=secret_param, max_body=max_body)

    async def handler(request: web.Request) -> web.StreamResponse:
        body: bytes | None = None
        if (request.content_length or 0) <= endpoint.max_body:
            # read() is bounded by the application's client_max_size too (aiohttp: 1 MiB).
            with contextlib.suppress(web.HTTPRequestEntityTooLarge):
                body = await request.read()
        if body is None or len(body) > endpoint.max_body:
            status, extra, payload = _plain(413, "body too large")
        else:
            headers = {k.lower(): v for k, v in request.headers.items()}
            status, extra, payload = await endpoint.handle(
                request.method, headers, dict(request.query), body
            )
        response = web.Response(status=status, body=payload)
        for key, value in extra:
            if key == "Content-Type":
                response.content_type = value.split(";")[0]
            else:
                response.headers[key] = value
        return response

    handler.endpoint = endpoint  # type: ignore[attr-defined]
    return handler
