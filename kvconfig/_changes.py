"""Change detection for live settings: what changed in the vault, at the lowest request cost.

*Tracked* secrets are the plan's unpinned ones (a pinned version never changes, so it is never
read again). Two ways to look for changes:

- **GET mode**: re-read every tracked secret (cache bypassed): ``len(tracked)`` requests.
- **List mode**: one ``GET /secrets`` pass (``list_properties_of_secrets``), ``ceil(N / 25)``
  requests for a vault of N secrets. List items carry no version, so each tracked secret's
  ``updated`` time and ``enabled`` flag are compared with what was last read; only changed or
  newly appeared secrets are read again. Absent means deleted, ``enabled: false`` means
  disabled: neither costs a GET.

List mode is used when it is cheaper: ``len(tracked) > ceil(N / 25)``, with N learned from the
previous list pass (before the first one, a single page is assumed). A 403 on the list switches
to GET mode for good.

``updated`` has one-second resolution, so a rotation within the same second as the version we
hold would leave it unchanged. A secret is therefore only trusted to the list once it was last
read at least ``1 + clock_skew`` seconds after its ``updated`` time; until then (right after a
rotation) a list pass reads it again. See :meth:`ChangeDetector._settled`.

Policies applied to what was seen (:meth:`ChangeDetector.propose`): a deleted or disabled secret
keeps its last-known-good value (``on_missing="keep"``) or falls back to other sources
(``"default"``); a version whose ``not_before`` is in the future is ignored until then
(``not_yet_valid="ignore"``) or used at once (``"accept"``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.rest import HttpRequest
from azure.keyvault.secrets.aio import SecretClient
from pydantic import BaseModel

from kvconfig._errors import VaultError, VaultUnavailableError
from kvconfig._fetch import FetchedSecret, SecretFetcher, SecretStatus
from kvconfig._names import SecretRef, SettingsPlan
from kvconfig._translate import Outcome, classify

__all__ = [
    "PAGE_SIZE",
    "ChangeDetector",
    "ChangeEvent",
    "Detection",
    "NotYetValid",
    "OnMissing",
    "Proposal",
    "RefreshUnavailableError",
    "SecretChange",
    "changed_fields",
]

logger = logging.getLogger("kvconfig")

PAGE_SIZE = 25  # Key Vault's default (and largest) list page
OnMissing = Literal["keep", "default"]
NotYetValid = Literal["ignore", "accept"]
Key = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class SecretChange:
    """One secret whose version in use changed. Versions and times only, never a value.

    ``old_version``/``new_version`` is ``None`` when the secret was missing or disabled.
    ``vault_url`` is the vault it is in (``None`` only when built without one).
    """

    name: str
    old_version: str | None
    new_version: str | None
    old_updated: datetime | None
    new_updated: datetime | None
    vault_url: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """What one published generation of live settings changed. Never holds a value.

    Attributes:
        generation: The generation now in ``live.current`` (the initial load is 0).
        fields: Dotted paths of the fields whose value changed, e.g. ``"database.password"``.
        secrets: The secrets whose version in use changed.
        time: When it was published (UTC).
    """

    generation: int
    fields: tuple[str, ...]
    secrets: tuple[SecretChange, ...]
    time: datetime


class RefreshUnavailableError(VaultUnavailableError):
    """Listing the vault kept failing transiently; ``retry_after`` is the server's hint, if any."""

    def __init__(self, message: str, *, vault_url: str, retry_after: float | None) -> None:
        super().__init__(message, vault_url=vault_url)
        self.retry_after = retry_after


class _Listed(NamedTuple):
    updated: datetime | None
    enabled: bool


@dataclass(frozen=True, slots=True)
class Detection:
    """What one detection pass observed.

    Attributes:
        observed: New observations per key (GET results, or missing/disabled from the list).
        observed_at: Wall-clock time (``time.time()``) the GETs of ``observed`` were sent.
        requests: HTTP requests made (list pages and GET attempts, retries included).
        mode: ``"list"`` or ``"get"``.
    """

    observed: Mapping[Key, FetchedSecret]
    observed_at: float
    requests: int
    mode: str


@dataclass(frozen=True, slots=True)
class Proposal:
    """The secrets a refresh would use (``held``, all keys) and how they differ from now."""

    detection: Detection
    held: Mapping[Key, FetchedSecret]
    changes: tuple[SecretChange, ...]


@dataclass(slots=True)
class _State:
    ref: SecretRef
    held: FetchedSecret  # what the published settings were built from
    seen: FetchedSecret  # what the vault last said (may differ from held by policy)
    seen_at: float  # wall-clock time the read behind `seen` was sent; 0 = unknown


class ChangeDetector:
    """Tracks the secrets behind one live Settings instance and finds what changed.

    Not thread-safe; one refresh at a time (``LiveSettings`` serialises them).
    """

    def __init__(
        self,
        plan: SettingsPlan,
        fetcher: SecretFetcher,
        client: SecretClient,
        *,
        on_missing: OnMissing,
        not_yet_valid: NotYetValid,
        clock_skew: float,
        request_timeout: float,
        wall_clock: Callable[[], float] = time.time,
        refs: Iterable[SecretRef] | None = None,
    ) -> None:
        self._plan = plan
        # The secrets of this vault to track (several vaults: kvconfig._refresh_routing).
        self._refs = tuple(refs) if refs is not None else plan.refs
        self._fetcher = fetcher
        self._client = client
        self._on_missing = on_missing
        self._not_yet_valid = not_yet_valid
        self._clock_skew = clock_skew
        self._request_timeout = request_timeout
        self._wall = wall_clock
        self._vault_url = fetcher.vault_url
        self._states: dict[Key, _State] = {}
        self._pinned: dict[Key, FetchedSecret] = {}
        self.vault_size: int | None = None
        self.list_forbidden = False
        self._warned: set[tuple[str, str | None, str]] = set()

    # -- state ---------------------------------------------------------------------------------

    def start(self, secrets: Mapping[Key, FetchedSecret], seen_at: Mapping[Key, float]) -> None:
        """Take the initial load's results; ``seen_at`` is 0 for keys served from the cache."""
        now = datetime.now(UTC)
        for ref in dict.fromkeys(self._refs):
            secret = secrets[ref.key]
            if ref.version is not None:
                self._pinned[ref.key] = secret
                continue
            self._states[ref.key] = _State(ref, secret, secret, seen_at.get(ref.key, 0.0))
            if secret.found and secret.is_expired(now):
                # load() has just warned about it.
                self._warned.add((secret.name.lower(), secret.version, "expired"))

    def track(self, ref: SecretRef, secret: FetchedSecret, seen_at: float) -> None:
        """Start tracking one more secret, read just now (a further candidate of a chain)."""
        if ref.version is not None:
            self._pinned[ref.key] = secret
        else:
            self._states[ref.key] = _State(ref, secret, secret, seen_at)

    def answers(self) -> dict[Key, FetchedSecret]:
        """The vault's latest answer for every tracked secret, and the pinned ones."""
        answers = dict(self._pinned)
        answers.update((key, state.seen) for key, state in self._states.items())
        return answers

    @property
    def vault_url(self) -> str:
        """The vault this detector watches."""
        return self._vault_url

    @property
    def tracked(self) -> tuple[SecretRef, ...]:
        """The unpinned secrets that are watched for changes."""
        return tuple(state.ref for state in self._states.values())

    @property
    def held(self) -> dict[Key, FetchedSecret]:
        """The secrets the current settings were built from, pinned ones included."""
        held = dict(self._pinned)
        held.update((key, state.held) for key, state in self._states.items())
        return held

    def mode(self) -> str:
        """``"list"`` when a list pass costs fewer requests than reading every tracked secret."""
        if self.list_forbidden or not self._states:
            return "get"
        pages = 1 if self.vault_size is None else max(1, math.ceil(self.vault_size / PAGE_SIZE))
        return "list" if len(self._states) > pages else "get"

    # -- detection -----------------------------------------------------------------------------

    async def detect(self, *, timeout: float) -> Detection:
        """Look for changes in the vault (list pass and/or GETs).

        Raises:
            VaultError: a permanent error (other than a forbidden list) or, as
                :class:`~kvconfig.VaultUnavailableError`, transient failures outlasting ``timeout``.
        """
        deadline = time.monotonic() + timeout
        mode = self.mode()
        requests = 0
        observed: dict[Key, FetchedSecret] = {}
        to_get: list[SecretRef] = []
        if mode == "list":
            listing, pages = await self._list(deadline)
            requests += pages
            if listing is None:
                mode = "get"
            else:
                to_get = self._compare(listing, observed)
        if mode == "get":
            to_get = [state.ref for state in self._states.values()]
        observed_at = self._wall()
        if to_get:
            result = await self._fetcher.fetch(
                to_get, max_age=0, timeout=max(0.0, deadline - time.monotonic())
            )
            requests += result.requests
            for ref in to_get:
                observed[ref.key] = result.secrets[ref.key]
        return Detection(observed, observed_at, requests, mode)

    def _compare(
        self, listing: Mapping[str, _Listed], observed: dict[Key, FetchedSecret]
    ) -> list[SecretRef]:
        """Synthesise missing/disabled observations from the list; return what must be read."""
        to_get: list[SecretRef] = []
        for key, state in self._states.items():
            item = listing.get(key[0])
            seen = state.seen
            if item is None:
                if seen.status is not SecretStatus.MISSING:
                    observed[key] = FetchedSecret(name=state.ref.name, status=SecretStatus.MISSING)
            elif not item.enabled:
                if seen.status is not SecretStatus.DISABLED:
                    observed[key] = FetchedSecret(name=state.ref.name, status=SecretStatus.DISABLED)
            elif not (seen.found and seen.updated == item.updated and self._settled(state)):
                to_get.append(state.ref)
        return to_get

    def _settled(self, state: _State) -> bool:
        """Whether an unchanged ``updated`` time proves the version is unchanged.

        ``updated`` counts whole seconds: a newer version written in the same second as ours
        shows the same time. Once our read was sent ``1 + clock_skew`` seconds after that second
        began, any later version must carry a later time.
        """
        updated = state.seen.updated
        if updated is None:
            return False
        return state.seen_at >= updated.timestamp() + 1.0 + self._clock_skew

    async def _list(self, deadline: float) -> tuple[dict[str, _Listed] | None, int]:
        """One list pass: lower-cased name -> (updated, enabled), and the requests it took.

        Pages are read with ``SecretClient.send_request`` (same pipeline, authentication and
        transport as every other call) and parsed as plain JSON: the SDK's per-item model
        deserialisation would cost several times the CPU of the request itself, and only
        ``id``, ``attributes.updated`` and ``attributes.enabled`` are needed. Transient failures
        are retried (resuming at the failed page) with the fetcher's backoff until ``deadline``.
        Returns ``None`` as the listing when listing is forbidden (403).
        """
        listing: dict[str, _Listed] = {}
        requests = 0
        attempt = 0
        url: str | None = "/secrets"  # the service's default page size (25)
        while url is not None:
            requests += 1
            try:
                response = await self._client.send_request(
                    HttpRequest("GET", url),
                    connection_timeout=self._request_timeout,
                    read_timeout=self._request_timeout,
                )
                if response.status_code != 200:
                    raise HttpResponseError(response=response)
                page = response.json()
            except (AzureError, TimeoutError) as exc:
                verdict = classify(exc, vault_url=self._vault_url, secret_name="*")
                if verdict is None:
                    raise
                if verdict.outcome is not Outcome.TRANSIENT:
                    status = getattr(exc, "status_code", None)
                    if status == 403:
                        self._forbid(verdict.reason)
                        return None, requests
                    raise VaultError(
                        f"listing the secrets of vault {self._vault_url} failed ({verdict.reason})",
                        vault_url=self._vault_url,
                        status=status,
                    ) from None
                attempt += 1
                delay = self._fetcher._delay(attempt, verdict.retry_after)
                if time.monotonic() + delay > deadline:
                    raise RefreshUnavailableError(
                        f"listing the secrets of vault {self._vault_url} failed: {verdict.reason}",
                        vault_url=self._vault_url,
                        retry_after=verdict.retry_after,
                    ) from None
                logger.debug(
                    "list of %s: %s, retrying in %.3fs", self._vault_url, verdict.reason, delay
                )
                await asyncio.sleep(delay)
                continue
            except ValueError:
                raise VaultError(
                    f"vault {self._vault_url} answered a list request with a body that is not JSON",
                    vault_url=self._vault_url,
                ) from None
            attempt = 0
            url = _read_page(page, listing)
        self.vault_size = len(listing)
        return listing, requests

    def _forbid(self, reason: str) -> None:
        self.list_forbidden = True
        logger.warning(
            "listing secrets of vault %s is forbidden (%s); change detection reads each of the "
            "%d tracked secrets instead (grant secrets/list to make a refresh cost fewer requests)",
            self._vault_url,
            reason,
            len(self._states),
        )

    # -- decision ------------------------------------------------------------------------------

    def propose(self, detection: Detection, now: datetime | None = None) -> Proposal:
        """Apply the policies to what was seen: the secrets to build from, and what changed."""
        now = now or datetime.now(UTC)
        held = dict(self._pinned)
        changes: list[SecretChange] = []
        for key, state in self._states.items():
            seen = detection.observed.get(key, state.seen)
            new = self._choose(state.held, seen, now)
            held[key] = new
            old = state.held
            if (old.status, old.version) != (new.status, new.version):
                changes.append(
                    SecretChange(
                        name=state.ref.name,
                        old_version=old.version if old.found else None,
                        new_version=new.version if new.found else None,
                        old_updated=old.updated if old.found else None,
                        new_updated=new.updated if new.found else None,
                        vault_url=self._vault_url,
                    )
                )
        return Proposal(detection, held, tuple(changes))

    def _choose(self, held: FetchedSecret, seen: FetchedSecret, now: datetime) -> FetchedSecret:
        if seen.found:
            if held.found and seen.version == held.version:
                return seen  # same version; properties (e.g. expiry) may have changed
            if self._not_yet_valid == "ignore" and seen.is_not_yet_valid(now):
                self._warn_once(
                    seen,
                    "pending",
                    "secret %s in %s has a new version %s that is not valid before %s; "
                    "keeping the current one until then (not_yet_valid='ignore')",
                    seen.name,
                    self._vault_url,
                    seen.version,
                    seen.not_before,
                )
                return held
            return seen
        if held.found and self._on_missing == "keep":
            self._warn_once(
                held,
                seen.status.value,
                "secret %s in %s is now %s; keeping its last-known-good version %s "
                "(on_missing='keep')",
                held.name,
                self._vault_url,
                "deleted" if seen.status is SecretStatus.MISSING else "disabled",
                held.version,
            )
            return held
        if held.found:
            logger.warning(
                "secret %s in %s is now %s; its fields fall back to other sources or their "
                "defaults (on_missing='default')",
                held.name,
                self._vault_url,
                "deleted" if seen.status is SecretStatus.MISSING else "disabled",
            )
        return seen

    def commit(self, proposal: Proposal) -> None:
        """Make a proposal the current state (after its settings validated, or nothing changed)."""
        detection = proposal.detection
        for key, state in self._states.items():
            seen = detection.observed.get(key)
            if seen is not None:
                state.seen = seen
                # A GET answer knows when its request was sent (a shared or cached one too).
                state.seen_at = seen.sent_at if seen.sent_at is not None else detection.observed_at
            state.held = proposal.held[key]

    def warn_expired(self, now: datetime | None = None) -> None:
        """Warn once per version about secrets in use whose ``expires_on`` has passed."""
        now = now or datetime.now(UTC)
        for state in self._states.values():
            secret = state.held
            if secret.found and secret.is_expired(now):
                self._warn_once(
                    secret,
                    "expired",
                    "secret %s in %s (version %s, in use) expired on %s; Key Vault still serves "
                    "it, so rotate it",
                    secret.name,
                    self._vault_url,
                    secret.version,
                    secret.expires_on,
                )

    def next_check_in(self, lead: float, now: datetime | None = None) -> float | None:
        """Seconds until a secret in use is ``lead`` seconds from expiring, or a pending
        not-yet-valid version becomes valid; ``None`` when there is no such moment ahead."""
        now = now or datetime.now(UTC)
        moments: list[float] = []
        for state in self._states.values():
            held, seen = state.held, state.seen
            if held.found and held.expires_on is not None:
                moments.append((held.expires_on - now).total_seconds() - lead)
            if seen.found and seen.version != held.version and seen.not_before is not None:
                moments.append((seen.not_before - now).total_seconds())
        ahead = [m for m in moments if m > 0]
        return min(ahead) if ahead else None

    def _warn_once(self, secret: FetchedSecret, what: str, message: str, *args: object) -> None:
        marker = (secret.name.lower(), secret.version, what)
        if marker not in self._warned:
            self._warned.add(marker)
            logger.warning(message, *args)


def _read_page(page: object, listing: dict[str, _Listed]) -> str | None:
    """Add a ``SecretListResult`` page's items to ``listing``; return its ``nextLink``."""
    if not isinstance(page, dict):
        return None
    for item in page.get("value") or ():
        secret_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(secret_id, str):
            continue
        name = secret_id.rstrip("/").rsplit("/", 1)[-1].lower()  # list ids carry no version
        attributes = item.get("attributes") or {}
        updated = attributes.get("updated")
        listing[name] = _Listed(
            datetime.fromtimestamp(updated, UTC) if isinstance(updated, int | float) else None,
            attributes.get("enabled") is not False,
        )
    next_link = page.get("nextLink")
    return next_link if isinstance(next_link, str) and next_link else None


def changed_fields(old: BaseModel, new: BaseModel) -> tuple[str, ...]:
    """Dotted paths of the fields whose values differ, descending into nested models."""
    return tuple(_diff(old, new, ()))


def _diff(old: BaseModel, new: BaseModel, prefix: tuple[str, ...]) -> Iterable[str]:
    for name in type(new).model_fields:
        a = getattr(old, name, None)
        b = getattr(new, name, None)
        path = (*prefix, name)
        if isinstance(a, BaseModel) and isinstance(b, BaseModel) and type(a) is type(b):
            yield from _diff(a, b, path)
        elif a != b:
            yield ".".join(path)
