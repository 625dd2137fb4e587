"""Push refresh: Key Vault events (Event Grid / CloudEvents) turned into targeted re-reads.

Two pieces, usable on their own:

- :func:`parse_events` reads what a webhook (or a queue consumer) received: an Event Grid body
  (a JSON list), a CloudEvent or a CloudEvents batch, as bytes, str, dicts or lists, or as
  ``azure.eventgrid.EventGridEvent``, ``azure.core.messaging.CloudEvent`` and CNCF
  ``cloudevents`` objects (recognised by shape, so none of those packages is imported), into
  :class:`SecretEvent` records. Events of other kinds (keys, certificates, access policies,
  subscription validation) are skipped; a body that is not events at all raises
  :class:`~kvconfig.EventFormatError` (the message never repeats the body).
- :class:`PushScheduler` decides what to re-read, and when. The contract, for the watcher that
  owns it (``LiveSettings``)::

      scheduler = PushScheduler(
          vault_url,                 # events for other vaults are ignored
          tracked=tracked,           # tracked(name) -> version held ("" if none) or None
          reread=reread,             # async reread(names: set[str]) -> None
          notify_max_delay=30.0,     # re-read after a random delay in [0, notify_max_delay]
      )
      async with scheduler:          # its timer task is cancelled and awaited on exit
          scheduler.notify(body)     # returns at once, no I/O; thread-safe

  ``notify`` ignores events for other vaults, for names ``tracked`` returns ``None`` for, and
  versions ``tracked`` says are held; for any other ``SecretNewVersionCreated`` it schedules the
  name for one re-read after a random delay (a fleet receiving the same event does not
  stampede the vault). Repeats before the re-read coalesce into it (the earliest due time
  wins). When the delay is up, names whose held version already equals every notified version
  (a poll got there first) are dropped; the rest go to one ``reread(names)`` call, which must
  GET the latest versions and validate-before-swap as any refresh does. ``reread`` runs in the
  scheduler's task: a slow one delays later re-reads, never ``notify``; its exceptions are
  logged (type only) and counted in :attr:`PushScheduler.reread_failures`, never raised.
  ``SecretNearExpiry`` / ``SecretExpired`` of tracked names are logged at WARNING and kept in
  :attr:`PushScheduler.expiry` for health reporting; they trigger no request.

  A forged event can at most cause one coalesced GET of a tracked secret: it carries no value
  and the re-read asks the vault.

Names are compared case-insensitively (as Key Vault does); ``tracked`` and ``reread`` receive the
spelling the event used.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from kvconfig._errors import ClosedError, EventFormatError

__all__ = [
    "SECRET_EXPIRED",
    "SECRET_NEAR_EXPIRY",
    "SECRET_NEW_VERSION_CREATED",
    "ExpiryNotice",
    "NotifyResult",
    "PushScheduler",
    "SecretEvent",
    "parse_events",
    "validation_code",
    "vault_host",
]

logger = logging.getLogger("kvconfig")

SECRET_NEW_VERSION_CREATED = "Microsoft.KeyVault.SecretNewVersionCreated"
SECRET_NEAR_EXPIRY = "Microsoft.KeyVault.SecretNearExpiry"
SECRET_EXPIRED = "Microsoft.KeyVault.SecretExpired"
_SECRET_TYPES = frozenset({SECRET_NEW_VERSION_CREATED, SECRET_NEAR_EXPIRY, SECRET_EXPIRED})
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
MAX_EVENTS = 5000  # Event Grid batches hold at most 5000 events (1 MB)


@dataclass(frozen=True, slots=True)
class SecretEvent:
    """One Key Vault secret event, as much as push refresh needs of it (never a value).

    ``vault_host`` is the lowercase authority of the secret id (``myvault.vault.azure.net``,
    ``127.0.0.1:8443``; port 443 dropped); ``version`` is ``""`` when the event had none.
    """

    event_type: str
    vault_host: str
    name: str
    version: str
    event_id: str = ""
    expires: int | None = None
    not_before: int | None = None

    @property
    def kind(self) -> str:
        """``"new_version"``, ``"near_expiry"`` or ``"expired"``."""
        return {
            SECRET_NEW_VERSION_CREATED: "new_version",
            SECRET_NEAR_EXPIRY: "near_expiry",
            SECRET_EXPIRED: "expired",
        }[self.event_type]


def vault_host(url: str) -> str:
    """The comparable authority of a vault URL or secret id: lowercase, port 443 dropped."""
    parts = urlsplit(url if "//" in url else f"https://{url}")
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return host if port in (None, 443) else f"{host}:{port}"


# -- parsing ------------------------------------------------------------------------------------


def parse_events(body: Any) -> list[SecretEvent]:
    """Key Vault secret events in ``body`` (see the module docstring for accepted forms).

    Raises :class:`~kvconfig.EventFormatError` when ``body`` is not an event, a list of events
    or JSON holding either; events of other types are skipped.
    """
    if isinstance(body, SecretEvent):
        return [body]
    if isinstance(body, bytes | bytearray | memoryview):
        body = _decode(body)
    if isinstance(body, str):
        body = _json(body, "event body is not valid JSON")
    items: Sequence[Any]
    if isinstance(body, list | tuple):
        items = body
    elif _as_mapping(body) is not None:
        items = [body]
    else:
        raise EventFormatError(f"expected an event or a list of events, got {type(body).__name__}")
    if len(items) > MAX_EVENTS:
        raise EventFormatError(f"more than {MAX_EVENTS} events in one body")
    events: list[SecretEvent] = []
    for index, item in enumerate(items):
        if isinstance(item, SecretEvent):
            events.append(item)
            continue
        doc = _as_mapping(item)
        if doc is None:
            raise EventFormatError(f"event {index} is a {type(item).__name__}, not an event object")
        event = _secret_event(doc, index)
        if event is not None:
            events.append(event)
    return events


def validation_code(body: Any) -> str | None:
    """The ``validationCode`` of an Event Grid subscription validation body, else ``None``."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        first = body[0]
        if first.get("eventType") == VALIDATION_EVENT and isinstance(first.get("data"), dict):
            code = first["data"].get("validationCode")
            return code if isinstance(code, str) else None
    return None


def _as_mapping(item: Any) -> dict[str, Any] | None:
    """A plain dict for a dict or a known event object (by shape, nothing imported)."""
    if isinstance(item, Mapping):
        return dict(item)
    get_attributes = getattr(item, "get_attributes", None)
    if callable(get_attributes) and callable(getattr(item, "get_data", None)):
        doc = dict(get_attributes())  # CNCF cloudevents (v1.http and core.v1)
        doc["data"] = item.get_data()
        return doc
    if hasattr(item, "event_type") and hasattr(item, "data"):  # azure.eventgrid.EventGridEvent
        return {
            "eventType": item.event_type,
            "subject": getattr(item, "subject", None),
            "topic": getattr(item, "topic", None),
            "id": getattr(item, "id", None),
            "data": item.data,
        }
    if all(hasattr(item, a) for a in ("type", "source", "data")):  # azure.core CloudEvent
        return {
            "type": item.type,
            "source": item.source,
            "subject": getattr(item, "subject", None),
            "id": getattr(item, "id", None),
            "data": item.data,
        }
    return None


def _secret_event(doc: dict[str, Any], index: int) -> SecretEvent | None:
    event_type = doc.get("eventType", doc.get("type"))
    if not isinstance(event_type, str):
        raise EventFormatError(f"event {index} has no eventType (Event Grid) or type (CloudEvents)")
    if event_type not in _SECRET_TYPES:
        return None
    data = doc.get("data")
    if isinstance(data, bytes | str):
        data = _json(data, f"event {index} ({event_type}): data is not JSON")
    if not isinstance(data, Mapping):
        raise EventFormatError(f"event {index} ({event_type}): data is not an object")
    # Key Vault's published names are Id, VaultName, ObjectName, Version, NBF, EXP; the docs'
    # samples also show camelCase and stray spaces, so keys are matched loosely.
    fields = {str(k).strip().lower(): v for k, v in data.items()}
    secret_id = _text(fields.get("id"))
    parts = urlsplit(secret_id).path.strip("/").split("/")  # secrets/<name>/<version>
    from_id = parts if len(parts) >= 2 and parts[0].lower() == "secrets" else []
    name = (
        _text(fields.get("objectname"))
        or _text(doc.get("subject"))
        or (from_id[1] if from_id else "")
    )
    version = _text(fields.get("version")) or (from_id[2] if len(from_id) >= 3 else "")
    host = vault_host(secret_id) if secret_id else ""
    if not host or not name:
        raise EventFormatError(
            f"event {index} ({event_type}): data has no secret Id (https://<vault>/secrets/...)"
        )
    return SecretEvent(
        event_type,
        host,
        name,
        version.lower(),
        _text(doc.get("id")),
        _epoch(fields.get("exp")),
        _epoch(fields.get("nbf")),
    )


# The errors are raised outside the ``except`` blocks: ``from None`` only hides the decode error,
# whose ``doc`` is the body, from tracebacks; ``__context__`` would still hold it.
def _decode(raw: bytes | bytearray | memoryview) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        pass
    raise EventFormatError("event body is not UTF-8 text")


def _json(text: str | bytes, message: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    raise EventFormatError(message)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _epoch(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


# -- scheduling ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpiryNotice:
    """A ``SecretNearExpiry`` / ``SecretExpired`` event for a tracked secret."""

    name: str
    kind: str  # "near_expiry" or "expired"
    version: str
    expires: dt.datetime | None
    received: dt.datetime


@dataclass(frozen=True, slots=True)
class NotifyResult:
    """What one :meth:`PushScheduler.notify` call did with its events."""

    scheduled: frozenset[str] = frozenset()  # names newly scheduled or coalesced into a re-read
    ignored: int = 0  # other vault, untracked name, or version already held
    expiry: int = 0  # expiry events recorded


@dataclass(slots=True)
class _Pending:
    name: str
    due: float
    versions: set[str] = field(default_factory=set)


class PushScheduler:
    """Turns Key Vault events into coalesced, randomly delayed re-reads (see module docstring)."""

    def __init__(
        self,
        vault_url: str,
        *,
        tracked: Callable[[str], str | None],
        reread: Callable[[set[str]], Awaitable[None]],
        notify_max_delay: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if notify_max_delay < 0:
            raise ValueError("notify_max_delay must be >= 0")
        self.vault_host = vault_host(vault_url)
        self._tracked = tracked
        self._reread = reread
        self.notify_max_delay = notify_max_delay
        self._rng = rng or random.Random()
        self._pending: dict[str, _Pending] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.expiry: dict[str, ExpiryNotice] = {}
        self.rereads = 0
        self.reread_failures = 0
        self.last_reread_error: str | None = None

    def __repr__(self) -> str:
        return (
            f"PushScheduler({self.vault_host!r}, pending={sorted(self._pending)}, "
            f"rereads={self.rereads}, failures={self.reread_failures})"
        )

    @property
    def pending(self) -> frozenset[str]:
        """Names waiting for their re-read (lowercase)."""
        return frozenset(self._pending)

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> PushScheduler:
        if self._closed:
            raise ClosedError("this PushScheduler was closed")
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.get_ident()
            self._task = self._loop.create_task(self._run(), name="kvconfig-push")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel the timer task (and a re-read in progress) and wait for it. Idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pending.clear()

    # -- notify --------------------------------------------------------------------------------

    def notify(self, events: Any) -> NotifyResult:
        """Take events (any form :func:`parse_events` accepts); schedule re-reads. No I/O.

        Raises :class:`~kvconfig.EventFormatError` for a body that is not events. Safe to call
        from any thread; after close, events are ignored.
        """
        parsed = parse_events(events)
        if self._loop is None and not self._closed:
            raise RuntimeError("use `async with PushScheduler(...)` before notify()")
        if self._closed or self._loop is None:
            return NotifyResult(ignored=len(parsed))
        if threading.get_ident() == self._thread:
            return self._take(parsed)
        # Another thread (a web server on its own loop): decide on ours, without waiting for it.
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._take, parsed)
        return NotifyResult()

    def _take(self, events: list[SecretEvent]) -> NotifyResult:
        if self._closed:
            return NotifyResult(ignored=len(events))
        scheduled: set[str] = set()
        ignored = expiry = 0
        now = time.monotonic()
        for event in events:
            held = self._tracked(event.name) if event.vault_host == self.vault_host else None
            if held is None:
                ignored += 1
                continue
            if event.event_type != SECRET_NEW_VERSION_CREATED:
                self._record_expiry(event)
                expiry += 1
                continue
            if event.version and event.version == held.lower():
                ignored += 1
                continue
            key = event.name.lower()
            due = now + self._rng.uniform(0, self.notify_max_delay)
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending(event.name, due)
            else:
                pending.due = min(pending.due, due)
            if event.version:
                pending.versions.add(event.version)
            scheduled.add(event.name)
        if scheduled:
            self._wake.set()
        return NotifyResult(frozenset(scheduled), ignored, expiry)

    def _record_expiry(self, event: SecretEvent) -> None:
        expires = (
            None if event.expires is None else dt.datetime.fromtimestamp(event.expires, dt.UTC)
        )
        notice = ExpiryNotice(
            event.name, event.kind, event.version, expires, dt.datetime.now(dt.UTC)
        )
        self.expiry[event.name.lower()] = notice
        logger.warning(
            "secret %r in vault %s: Key Vault reports %s (version %s, expires %s)",
            event.name,
            self.vault_host,
            event.event_type.rsplit(".", 1)[-1],
            event.version or "?",
            expires.isoformat() if expires else "unknown",
        )

    # -- the timer task ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = min(p.due for p in self._pending.values()) - time.monotonic()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            now = time.monotonic()
            due = [p for p in self._pending.values() if p.due <= now]
            for p in due:
                del self._pending[p.name.lower()]
            names = {p.name for p in due if self._still_needed(p)}
            if names:
                await self._call_reread(names)

    def _still_needed(self, pending: _Pending) -> bool:
        held = self._tracked(pending.name)
        if held is None:
            return False  # no longer tracked
        return not pending.versions or pending.versions != {held.lower()}

    async def _call_reread(self, names: set[str]) -> None:
        self.rereads += 1
        try:
            await self._reread(names)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep the last-known-good; the next event or poll retries
            self.reread_failures += 1
            self.last_reread_error = type(exc).__name__
            logger.warning(
                "push re-read of %s in vault %s failed: %s",
                sorted(names),
                self.vault_host,
                type(exc).__name__,
            )
