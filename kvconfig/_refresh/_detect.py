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
to GET mode; the list is tried again after :data:`LIST_RETRY_AFTER_FORBIDDEN` seconds (a
permission granted later is noticed). A secret absent from a list pass is confirmed with a GET
before it counts as deleted (one request, only when its state changes). List failures are
classified exactly as GETs are (401 is :class:`~kvconfig.VaultAuthenticationError`, a page that
is not a JSON object is a malformed answer, retried, then
:class:`~kvconfig.MalformedResponseError`; a vault closed mid-pass is
:class:`~kvconfig.ClosedError`).

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

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from azure.keyvault.secrets.aio import SecretClient

from kvconfig._fetch import SecretFetcher
from kvconfig._model import FetchedSecret, SecretStatus
from kvconfig._names import SecretRef, SettingsPlan
from kvconfig._refresh._events import SecretChange
from kvconfig._refresh._health import HealthIssue, IssueKind
from kvconfig._refresh._listing import (
    PAGE_SIZE,
    Listed,
    ListForbidden,
    list_secrets,
)

__all__ = [
    "LIST_RETRY_AFTER_FORBIDDEN",
    "ChangeDetector",
    "Detection",
    "NotYetValid",
    "OnMissing",
    "Proposal",
]

logger = logging.getLogger("kvconfig")

LIST_RETRY_AFTER_FORBIDDEN = 3600.0  # seconds in GET mode after a 403 on the list
OnMissing = Literal["keep", "default"]
NotYetValid = Literal["ignore", "accept"]
Key = tuple[str, str | None]


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
    rejected: str | None = None  # why `seen` (a new version) did not validate; kept `held`


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
    ) -> None:
        self._plan = plan
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
        self._list_retry_at = 0.0  # monotonic time the list may be tried again after a 403
        self._warned: set[tuple[str, str | None, str]] = set()

    # -- state ---------------------------------------------------------------------------------

    def start(self, secrets: Mapping[Key, FetchedSecret], seen_at: Mapping[Key, float]) -> None:
        """Take the initial load's results; ``seen_at`` is 0 for keys served from the cache."""
        now = datetime.now(UTC)
        for ref in dict.fromkeys(self._plan.refs):
            secret = secrets[ref.key]
            if ref.version is not None:
                self._pinned[ref.key] = secret
                continue
            self._states[ref.key] = _State(ref, secret, secret, seen_at.get(ref.key, 0.0))
            if secret.found and secret.is_expired(now):
                # load() has just warned about it.
                self._warned.add((secret.name.lower(), secret.version, "expired"))

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
        if self.list_forbidden and time.monotonic() >= self._list_retry_at:
            self.list_forbidden = False  # try the list again: the permission may be granted
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
                to_get, max_age=0, timeout=max(0.0, deadline - time.monotonic()), strict=False
            )
            requests += result.requests
            for ref in to_get:
                observed[ref.key] = result.secrets[ref.key]
        return Detection(observed, observed_at, requests, mode)

    async def detect_names(self, names: Iterable[str], *, timeout: float) -> Detection:
        """Re-read the tracked secrets called ``names`` (case-insensitive), cache bypassed.

        Names that are not tracked (pinned, or not in the plan) are ignored.
        """
        wanted = {name.lower() for name in names}
        refs = [state.ref for key, state in self._states.items() if key[0] in wanted]
        observed: dict[Key, FetchedSecret] = {}
        observed_at = self._wall()
        requests = 0
        if refs:
            result = await self._fetcher.fetch(refs, max_age=0, timeout=timeout, strict=False)
            requests = result.requests
            for ref in refs:
                observed[ref.key] = result.secrets[ref.key]
        return Detection(observed, observed_at, requests, "get")

    def _compare(
        self, listing: Mapping[str, Listed], observed: dict[Key, FetchedSecret]
    ) -> list[SecretRef]:
        """Synthesise missing/disabled observations from the list; return what must be read."""
        to_get: list[SecretRef] = []
        for key, state in self._states.items():
            item = listing.get(key[0])
            seen = state.seen
            if item is None:
                if seen.status is not SecretStatus.MISSING:
                    # Absent from this pass: confirm with a GET (a 404) before it counts as deleted.
                    to_get.append(state.ref)
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

    async def _list(self, deadline: float) -> tuple[dict[str, Listed] | None, int]:
        """One list pass (see :func:`kvconfig._refresh._listing.list_secrets`); ``None`` as the
        listing when listing is forbidden (403), which switches to GET mode for a while."""
        try:
            listing, requests = await list_secrets(
                self._client,
                vault_url=self._vault_url,
                retry=self._fetcher.retry,
                request_timeout=self._request_timeout,
                deadline=deadline,
                closed=lambda: self._fetcher.closed,
            )
        except ListForbidden as forbidden:
            self._forbid(forbidden.reason)
            return None, forbidden.requests
        self.vault_size = len(listing)
        return listing, requests

    def _forbid(self, reason: str) -> None:
        self.list_forbidden = True
        self._list_retry_at = time.monotonic() + LIST_RETRY_AFTER_FORBIDDEN
        logger.warning(
            "listing secrets of vault %s is forbidden (%s); change detection reads each of the "
            "%d tracked secrets instead, and tries the list again in an hour (grant secrets/list "
            "to make a refresh cost fewer requests)",
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

    def without(self, proposal: Proposal, names: Iterable[str]) -> Proposal:
        """``proposal`` with the changes of the secrets called ``names`` left out: those keep
        the version the published settings were built from."""
        drop = {name.lower() for name in names}
        held = dict(proposal.held)
        for key, state in self._states.items():
            if key[0] in drop:
                held[key] = state.held
        changes = tuple(c for c in proposal.changes if c.name.lower() not in drop)
        return Proposal(proposal.detection, held, changes)

    def commit(self, proposal: Proposal, rejected: Mapping[str, str] | None = None) -> None:
        """Make a proposal the current state (after its settings validated, or nothing changed).

        ``rejected`` maps the lower-cased names of secrets whose new version was left out
        (:meth:`without`) because it does not validate to why; they are proposed again at the
        next refresh (``seen`` keeps the rejected version) and reported by :meth:`issues`.
        """
        detection = proposal.detection
        rejected = rejected or {}
        for key, state in self._states.items():
            seen = detection.observed.get(key)
            if seen is not None:
                state.seen = seen
                # A GET answer knows when its request was sent (a shared or cached one too).
                state.seen_at = seen.sent_at if seen.sent_at is not None else detection.observed_at
            state.held = proposal.held[key]
            state.rejected = rejected.get(key[0])

    def issues(self) -> tuple[HealthIssue, ...]:
        """Why the published settings differ from what the vault says (see ``Health``)."""
        fields: dict[str, list[str]] = {}
        for planned in self._plan.secrets:
            fields.setdefault(planned.name.lower(), []).append(planned.field)
        found: list[HealthIssue] = []
        for key, state in self._states.items():
            held, seen = state.held, state.seen
            names = tuple(fields.get(key[0], ()))
            if state.rejected is not None:
                found.append(
                    HealthIssue(
                        "rejected", self._vault_url, held.name, names, seen.version, state.rejected
                    )
                )
            elif held.found and not seen.found and self._on_missing == "keep":
                gone: IssueKind = "deleted" if seen.status is SecretStatus.MISSING else "disabled"
                found.append(
                    HealthIssue(
                        gone,
                        self._vault_url,
                        held.name,
                        names,
                        held.version,
                        f"secret {held.name} is {gone} in the vault; its last-known-good "
                        f"version is kept (on_missing='keep')",
                    )
                )
        if self.list_forbidden:
            found.append(
                HealthIssue(
                    "list_forbidden",
                    self._vault_url,
                    None,
                    (),
                    None,
                    "listing secrets is forbidden (grant secrets/list); each refresh reads "
                    "every tracked secret instead",
                )
            )
        return tuple(found)

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
