"""Key Vault events delivered to webhooks the way Azure Event Grid delivers them.

A subscription is what an Event Grid system topic on a vault plus a webhook event subscription
are on Azure: ``await emu.subscribe(url, schema=..., event_types=..., vault=...)``.

- Validation first. Event Grid schema: a POST of a
  ``Microsoft.EventGrid.SubscriptionValidationEvent`` (``data.validationCode``,
  ``data.validationUrl``; header ``aeg-event-type: SubscriptionValidation``) that the endpoint
  answers 200 ``{"validationResponse": code}``, or later by a GET of ``validationUrl`` (served by
  the emulator, plain http on loopback). CloudEvents 1.0 schema: an ``OPTIONS`` request with
  ``WebHook-Request-Origin: eventgrid.azure.net`` answered 200 with ``WebHook-Allowed-Origin``
  (that origin or ``*``). An endpoint that fails gets no events:
  :meth:`EventPublisher.subscribe` raises :class:`SubscriptionValidationError`.
- Events: ``Microsoft.KeyVault.SecretNewVersionCreated`` for every new version (SDK set, restore,
  recover, the emulator's own ``set_secret``/``seed``); ``SecretNearExpiry`` (30 days before
  ``exp``) and ``SecretExpired`` when :meth:`EventPublisher.scan_expiry` runs. ``data`` is Key
  Vault's (``Id``, ``VaultName``, ``ObjectType``, ``ObjectName``, ``Version``, ``NBF``, ``EXP``):
  never a value.
- Delivery off the request path: one background task per subscription (owned by the publisher,
  cancelled and awaited on close) sends batches of at most ``max_events_per_batch`` events;
  5xx, 408, 429, connection errors and timeouts are retried with exponential backoff up to
  ``max_attempts``; 400, 401, 403 and 413 are not retried (as Event Grid does). Every attempt is
  recorded in :attr:`EventPublisher.deliveries` (event ids and types, never data; the delivery
  secret is masked in the recorded URL).
- Delivery auth: ``secret=`` is sent as a query parameter (``secret_param``, default ``code``),
  ``bearer_token=`` as ``Authorization: Bearer ...``; both on the handshake too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import json
import logging
import secrets as _random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from kvconfig.emulator._store import Secret, SecretVersion

__all__ = [
    "EVENT_TYPES",
    "SECRET_EXPIRED",
    "SECRET_NEAR_EXPIRY",
    "SECRET_NEW_VERSION_CREATED",
    "DeliveryRecord",
    "EventPublisher",
    "EventSubscription",
    "SubscriptionValidationError",
]

_log = logging.getLogger("kvconfig.emulator.events")

SECRET_NEW_VERSION_CREATED = "Microsoft.KeyVault.SecretNewVersionCreated"
SECRET_NEAR_EXPIRY = "Microsoft.KeyVault.SecretNearExpiry"
SECRET_EXPIRED = "Microsoft.KeyVault.SecretExpired"
EVENT_TYPES = frozenset({SECRET_NEW_VERSION_CREATED, SECRET_NEAR_EXPIRY, SECRET_EXPIRED})
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
WEBHOOK_ORIGIN = "eventgrid.azure.net"
NEAR_EXPIRY_DAYS = 30
# A made-up subscription and resource group: topics look like a real vault's resource id.
SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "kvconfig-emulator"
_NO_RETRY = frozenset({400, 401, 403, 413})

Schema = Literal["eventgrid", "cloudevents"]


class SubscriptionValidationError(Exception):
    """The endpoint did not complete the validation handshake; it gets no events."""

    def __init__(self, endpoint: str, reason: str, status: int = 0) -> None:
        super().__init__(f"event subscription to {endpoint} failed validation: {reason}")
        self.endpoint = endpoint
        self.status = status


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One delivery attempt (or handshake) to a webhook.

    ``kind`` is ``"validation"`` or ``"events"``; ``status`` the HTTP status, 0 for a connection
    error or timeout; ``outcome`` is ``"delivered"``, ``"retrying"``, ``"dropped"`` (no retry for
    that status, or attempts exhausted), ``"validated"`` or ``"rejected"``. ``endpoint`` has the
    delivery secret masked. ``time`` is ``time.monotonic()`` when the attempt finished.
    """

    subscription: str
    endpoint: str
    kind: str
    status: int
    outcome: str
    attempt: int = 1
    event_ids: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    time: float = 0.0


class _State(enum.Enum):
    PENDING = "pending"  # handshake answered without the code: waiting for the validationUrl GET
    ACTIVE = "active"
    REMOVED = "removed"


@dataclass(eq=False)
class EventSubscription:
    """A webhook subscription on one vault. Created by :meth:`EventPublisher.subscribe`."""

    id: str
    endpoint: str
    schema: Schema
    vault: str
    event_types: frozenset[str]
    secret: str | None = field(default=None, repr=False)
    secret_param: str = "code"
    bearer_token: str | None = field(default=None, repr=False)
    max_events_per_batch: int = 1
    max_attempts: int = 4
    retry_delay: float = 0.05
    timeout: float = 5.0
    state: _State = _State.PENDING
    _queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue, repr=False)
    _validated: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _validation_code: str = field(default_factory=lambda: str(uuid.uuid4()), repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.state is _State.ACTIVE

    def url(self) -> str:
        """The endpoint with the delivery secret as a query parameter (what is requested)."""
        if self.secret is None:
            return self.endpoint
        parts = urlsplit(self.endpoint)
        query = [*parse_qsl(parts.query, keep_blank_values=True), (self.secret_param, self.secret)]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def shown_endpoint(self) -> str:
        """The endpoint for logs and records: the delivery secret masked."""
        if self.secret is None:
            return self.endpoint
        parts = urlsplit(self.endpoint)
        query = [*parse_qsl(parts.query, keep_blank_values=True), (self.secret_param, "***")]
        return urlunsplit(parts._replace(query=urlencode(query, safe="*")))

    def headers(self) -> dict[str, str]:
        return {} if self.bearer_token is None else {"Authorization": f"Bearer {self.bearer_token}"}


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventPublisher:
    """Subscriptions, event building and webhook delivery for one emulator.

    ``vault_url_for(vault)`` gives a vault's URL (for the ``Id`` of events). Enqueueing is
    thread-safe (the emulator's store methods may be called from another thread); delivery runs
    on the loop the first :meth:`subscribe` ran on.
    """

    def __init__(self, vault_url_for: Callable[[str], str], *, host: str = "127.0.0.1") -> None:
        self._vault_url_for = vault_url_for
        self._host = host
        self._subs: dict[str, EventSubscription] = {}
        self.deliveries: list[DeliveryRecord] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._validation_base = ""
        self._expiry_sent: set[tuple[str, str, str, str]] = set()
        self._closed = False

    # -- subscriptions -------------------------------------------------------------------------

    @property
    def subscriptions(self) -> list[EventSubscription]:
        return [s for s in self._subs.values() if s.state is not _State.REMOVED]

    async def subscribe(
        self,
        endpoint: str,
        *,
        schema: Schema = "eventgrid",
        event_types: Collection[str] | None = None,
        vault: str,
        secret: str | None = None,
        secret_param: str = "code",
        bearer_token: str | None = None,
        max_events_per_batch: int = 1,
        max_attempts: int = 4,
        retry_delay: float = 0.05,
        timeout: float = 5.0,
        validation_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> EventSubscription:
        """Validate the endpoint, then deliver this vault's events to it until unsubscribed."""
        if self._closed:
            raise RuntimeError("the event publisher is closed")
        if schema not in ("eventgrid", "cloudevents"):
            raise ValueError(f"schema must be 'eventgrid' or 'cloudevents', not {schema!r}")
        types = frozenset(EVENT_TYPES if event_types is None else event_types)
        unknown = sorted(types - EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {sorted(EVENT_TYPES)}")
        if urlsplit(endpoint).scheme not in ("http", "https"):
            raise ValueError(f"endpoint must be an http(s) URL, not {endpoint!r}")
        if max_events_per_batch < 1 or max_attempts < 1:
            raise ValueError("max_events_per_batch and max_attempts must be at least 1")
        self._vault_url_for(vault)  # KeyError for an unknown vault
        await self._open(ssl_context)
        sub = EventSubscription(
            id=uuid.uuid4().hex,
            endpoint=endpoint,
            schema=schema,
            vault=vault,
            event_types=types,
            secret=secret,
            secret_param=secret_param,
            bearer_token=bearer_token,
            max_events_per_batch=max_events_per_batch,
            max_attempts=max_attempts,
            retry_delay=retry_delay,
            timeout=timeout,
        )
        self._subs[sub.id] = sub
        try:
            await self._validate(sub, validation_timeout)
        except BaseException:
            sub.state = _State.REMOVED
            del self._subs[sub.id]
            raise
        sub.state = _State.ACTIVE
        sub._task = asyncio.get_running_loop().create_task(
            self._deliver_loop(sub), name=f"kvemu-events-{sub.id[:8]}"
        )
        return sub

    async def unsubscribe(self, subscription: EventSubscription | str) -> None:
        """Stop delivering to a subscription (or to every subscription of an endpoint URL).

        Events still queued for it are dropped (not recorded). Idempotent.
        """
        if isinstance(subscription, EventSubscription):
            subs = [subscription]
        else:
            subs = [s for s in self._subs.values() if s.endpoint == subscription]
        for sub in subs:
            sub.state = _State.REMOVED
            self._subs.pop(sub.id, None)
            if sub._task is not None:
                sub._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sub._task
                sub._task = None

    async def _open(self, ssl_context: ssl.SSLContext | None) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.get_ident()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_context if ssl_context else True),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        if self._runner is None:
            app = web.Application()
            app.router.add_get("/validate/{sub}", self._validation_url_hit)
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self._host, 0)
            await site.start()
            self._runner = runner
            port = runner.addresses[0][1]
            host = f"[{self._host}]" if ":" in self._host else self._host
            self._validation_base = f"http://{host}:{port}/validate"

    async def _validation_url_hit(self, request: web.Request) -> web.Response:
        sub = self._subs.get(request.match_info["sub"])
        code = request.query.get("code", "")
        if sub is None or not _random.compare_digest(code, sub._validation_code):
            return web.json_response({"error": "unknown subscription or code"}, status=404)
        sub._validated.set()
        return web.json_response({"validated": True})

    async def _validate(self, sub: EventSubscription, validation_timeout: float) -> None:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=sub.timeout)
        shown = sub.shown_endpoint()
        status = 0
        ok: bool | None
        try:
            if sub.schema == "cloudevents":
                headers = {**sub.headers(), "WebHook-Request-Origin": WEBHOOK_ORIGIN}
                async with self._session.options(
                    sub.url(), headers=headers, timeout=timeout
                ) as resp:
                    status = resp.status
                    allowed = resp.headers.get("WebHook-Allowed-Origin", "")
                ok = status == 200 and allowed.strip() in (WEBHOOK_ORIGIN, "*")
                reason = f"answered {status}, WebHook-Allowed-Origin {allowed!r}"
            else:
                ok, status, reason = await self._validate_eventgrid(sub, timeout)
                if ok is None:  # 200 without the code: manual validation through validationUrl
                    try:
                        await asyncio.wait_for(sub._validated.wait(), validation_timeout)
                        ok, reason = True, ""
                    except TimeoutError:
                        ok, reason = False, "validationUrl was not visited in time"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok, reason = False, f"{type(exc).__name__}"
        self._record(sub, shown, "validation", status, "validated" if ok else "rejected")
        if not ok:
            raise SubscriptionValidationError(shown, reason, status)

    async def _validate_eventgrid(
        self, sub: EventSubscription, timeout: aiohttp.ClientTimeout
    ) -> tuple[bool | None, int, str]:
        assert self._session is not None
        code = sub._validation_code
        event = {
            "id": str(uuid.uuid4()),
            "topic": self.resource_id(sub.vault),
            "subject": "",
            "data": {
                "validationCode": code,
                "validationUrl": f"{self._validation_base}/{sub.id}?code={code}",
            },
            "eventType": VALIDATION_EVENT,
            "eventTime": _iso(time.time()),
            "metadataVersion": "1",
            "dataVersion": "2",
        }
        headers = {
            **sub.headers(),
            "aeg-event-type": "SubscriptionValidation",
            "aeg-subscription-name": sub.id.upper(),
            "Content-Type": "application/json",
        }
        async with self._session.post(
            sub.url(), data=json.dumps([event]), headers=headers, timeout=timeout
        ) as resp:
            status = resp.status
            raw = await resp.read()
        if status != 200:
            return False, status, f"answered {status}"
        try:
            answer = json.loads(raw) if raw.strip() else None
        except ValueError:
            return False, status, "answered 200 with a body that is not JSON"
        if isinstance(answer, dict) and "validationResponse" in answer:
            if answer["validationResponse"] == code:
                return True, status, ""
            return False, status, "answered a wrong validationResponse"
        return None, status, ""

    # -- events --------------------------------------------------------------------------------

    @staticmethod
    def resource_id(vault: str) -> str:
        """The (made-up) Azure resource id of a vault: the ``topic`` of its events."""
        return (
            f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}"
            f"/providers/Microsoft.KeyVault/vaults/{vault}"
        )

    def _event(self, event_type: str, vault: str, name: str, v: SecretVersion) -> dict[str, Any]:
        """An event in the Event Grid schema (the CloudEvents form is derived on delivery)."""
        try:
            base = self._vault_url_for(vault)
        except KeyError:
            base = ""
        return {
            "id": str(uuid.uuid4()),
            "topic": self.resource_id(vault),
            "subject": name,
            "eventType": event_type,
            "eventTime": _iso(time.time()),
            "data": {
                "Id": f"{base}/secrets/{name}/{v.version}",
                "VaultName": vault,
                "ObjectType": "Secret",
                "ObjectName": name,
                "Version": v.version,
                "NBF": v.not_before,
                "EXP": v.expires,
            },
            "dataVersion": "1",
            "metadataVersion": "1",
        }

    def secret_version_created(self, vault: str, secret: Secret, version: SecretVersion) -> None:
        """Store hook: a new version exists (set, restore, recover). Never blocks."""
        self._publish(self._event(SECRET_NEW_VERSION_CREATED, vault, secret.name, version))

    def scan_expiry(
        self, vaults: Mapping[str, list[Secret]], now: dt.datetime | None = None
    ) -> int:
        """Queue ``SecretNearExpiry`` / ``SecretExpired`` for the current version of every active
        secret with ``exp`` within 30 days / in the past. Each fires once per version; returns
        how many events were queued (before subscription filtering)."""
        at = (now or dt.datetime.now(dt.UTC)).timestamp()
        queued = 0
        for vault, secrets in vaults.items():
            for secret in secrets:
                v = secret.latest
                if v.expires is None:
                    continue
                if v.expires <= at:
                    kind = SECRET_EXPIRED
                elif v.expires - at <= NEAR_EXPIRY_DAYS * 86400:
                    kind = SECRET_NEAR_EXPIRY
                else:
                    continue
                key = (vault, secret.name.lower(), v.version, kind)
                if key in self._expiry_sent:
                    continue
                self._expiry_sent.add(key)
                self._publish(self._event(kind, vault, secret.name, v))
                queued += 1
        return queued

    def _publish(self, event: dict[str, Any]) -> None:
        if self._closed or self._loop is None or not self._subs:
            return
        if threading.get_ident() == self._thread:
            self._enqueue(event)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to deliver to
                self._loop.call_soon_threadsafe(self._enqueue, event)

    def _enqueue(self, event: dict[str, Any]) -> None:
        vault = event["topic"].rsplit("/", 1)[-1]
        for sub in list(self._subs.values()):
            if sub.active and sub.vault == vault and event["eventType"] in sub.event_types:
                sub._queue.put_nowait(event)

    # -- delivery ------------------------------------------------------------------------------

    async def _deliver_loop(self, sub: EventSubscription) -> None:
        while True:
            batch = [await sub._queue.get()]
            try:
                while len(batch) < sub.max_events_per_batch and not sub._queue.empty():
                    batch.append(sub._queue.get_nowait())
                await self._deliver(sub, batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # an emulator bug must not end delivery for the subscription
                _log.exception("event delivery to %s failed", sub.shown_endpoint())
            finally:
                for _ in batch:
                    sub._queue.task_done()

    def _body(self, sub: EventSubscription, batch: list[dict[str, Any]]) -> tuple[bytes, str]:
        if sub.schema == "eventgrid":
            return json.dumps(batch).encode(), "application/json"
        events = [_cloudevent(e) for e in batch]
        if sub.max_events_per_batch == 1:
            return json.dumps(events[0]).encode(), "application/cloudevents+json; charset=utf-8"
        return json.dumps(events).encode(), "application/cloudevents-batch+json; charset=utf-8"

    async def _deliver(self, sub: EventSubscription, batch: list[dict[str, Any]]) -> None:
        assert self._session is not None
        body, content_type = self._body(sub, batch)
        headers = {**sub.headers(), "Content-Type": content_type}
        if sub.schema == "eventgrid":
            headers["aeg-event-type"] = "Notification"
            headers["aeg-subscription-name"] = sub.id.upper()
        ids = tuple(e["id"] for e in batch)
        types = tuple(e["eventType"] for e in batch)
        subjects = tuple(e["subject"] for e in batch)
        shown = sub.shown_endpoint()
        for attempt in range(1, sub.max_attempts + 1):
            headers["aeg-delivery-count"] = str(attempt - 1)
            status = 0
            try:
                async with self._session.post(
                    sub.url(),
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=sub.timeout),
                ) as resp:
                    status = resp.status
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError, OSError):
                status = 0
            if 200 <= status < 300:
                outcome = "delivered"
            elif status in _NO_RETRY or attempt == sub.max_attempts:
                outcome = "dropped"
            else:
                outcome = "retrying"
            self._record(sub, shown, "events", status, outcome, attempt, ids, types, subjects)
            if outcome != "retrying":
                if outcome == "dropped":
                    _log.warning(
                        "dropped %d event(s) for %s after attempt %d (status %d)",
                        len(batch),
                        shown,
                        attempt,
                        status,
                    )
                return
            await asyncio.sleep(sub.retry_delay * 2 ** (attempt - 1))

    def _record(
        self,
        sub: EventSubscription,
        shown: str,
        kind: str,
        status: int,
        outcome: str,
        attempt: int = 1,
        ids: tuple[str, ...] = (),
        types: tuple[str, ...] = (),
        subjects: tuple[str, ...] = (),
    ) -> None:
        self.deliveries.append(
            DeliveryRecord(
                sub.id,
                shown,
                kind,
                status,
                outcome,
                attempt,
                ids,
                types,
                subjects,
                time.monotonic(),
            )
        )

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until every queued event has been delivered or dropped (for tests).

        Events queued from another thread land on the loop first, so call this after the
        store change has returned. Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            await asyncio.sleep(0)  # let call_soon_threadsafe enqueues run
            await asyncio.gather(*(s._queue.join() for s in list(self._subs.values())))

    async def aclose(self) -> None:
        """Cancel and await every delivery task; close the session. Idempotent."""
        self._closed = True
        for sub in list(self._subs.values()):
            await self.unsubscribe(sub)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _cloudevent(event: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvents 1.0 form of an Event Grid schema event (as Event Grid maps it)."""
    return {
        "specversion": "1.0",
        "type": event["eventType"],
        "source": event["topic"],
        "subject": event["subject"],
        "id": event["id"],
        "time": event["eventTime"],
        "datacontenttype": "application/json",
        "data": event["data"],
    }
