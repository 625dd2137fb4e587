"""Change detection across several vaults: one :class:`ChangeDetector` per vault, one verdict.

:class:`RoutedDetector` has the interface ``LiveSettings`` drives (``detect`` /
``detect_names`` / ``propose`` / ``commit`` / ``mode`` / ``next_check_in`` / ``warn_expired``)
and keeps one :class:`~kvconfig._refresh._detect.ChangeDetector` per vault involved, each
choosing list or GET mode for its own vault. A refresh:

1. detects in every vault concurrently (the first permanent error cancels the others);
2. for a chain (fallback vaults, prefix chain) whose every candidate read so far is now missing,
   reads the candidates after them (as a load would) and starts tracking them;
3. resolves every planned field and every Key Vault reference along its chain from what each
   vault's detector would hold, so the whole refresh yields one set of secrets: one build, at
   most one published generation, whatever the number of vaults that changed.

The candidates tracked per vault are those a load read: the one a field resolved to and every
earlier one that answered 404 (so a secret appearing earlier in a chain, e.g. in the primary
vault, takes over at the next refresh; in list mode that costs no extra request).
"""

from __future__ import annotations

import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kvconfig._model import FetchedSecret, SecretStatus
from kvconfig._names import SecretRef, SettingsPlan
from kvconfig._references import FoundReference
from kvconfig._refresh._detect import ChangeDetector, Detection, NotYetValid, OnMissing, Proposal
from kvconfig._refresh._events import SecretChange
from kvconfig._refresh._health import HealthIssue
from kvconfig._routing import Candidate, ReadResult, VaultPool, all_or_none, chain, read_chains

__all__ = ["RoutedDetection", "RoutedDetector", "RoutedProposal"]

Slot = tuple[str, str | None]
CandidateKey = tuple[str, str, str | None]


@dataclass(frozen=True, slots=True)
class RoutedDetection:
    """What one detection pass saw in every vault.

    Attributes:
        per_vault: Each vault's :class:`~kvconfig._refresh._detect.Detection`.
        added: Chain candidates read for the first time in this pass.
        requests: HTTP requests made, every vault included.
        mode: ``"list"``, ``"get"``, or ``"mixed"`` when vaults differ.
    """

    per_vault: Mapping[str, Detection]
    added: Mapping[Candidate, FetchedSecret]
    requests: int
    mode: str


@dataclass(frozen=True, slots=True)
class RoutedProposal:
    """The secrets a refresh would build from (by ``PlannedSecret.slot``), the reference values,
    and what changed."""

    detection: RoutedDetection
    per_vault: Mapping[str, Proposal]
    held: Mapping[Slot, FetchedSecret]
    references: Mapping[str, str]
    changes: tuple[SecretChange, ...]
    added: Mapping[Candidate, FetchedSecret]  # chain candidates read for the first time


class RoutedDetector:
    """Tracks the secrets behind one live Settings instance in every vault it reads."""

    def __init__(
        self,
        plan: SettingsPlan,
        references: Sequence[tuple[FoundReference, Candidate]],
        pool: VaultPool,
        *,
        on_missing: OnMissing,
        not_yet_valid: NotYetValid,
        clock_skew: float,
        request_timeout: float,
    ) -> None:
        self._plan = plan
        self._found = tuple(found for found, _ in references)
        self._chains: list[tuple[Candidate, ...]] = [chain(s) for s in plan.secrets]
        self._chains.extend((candidate,) for _, candidate in references)
        self._pool = pool
        self._on_missing: OnMissing = on_missing
        self._not_yet_valid: NotYetValid = not_yet_valid
        self._clock_skew = clock_skew
        self._request_timeout = request_timeout
        self._detectors: dict[str, ChangeDetector] = {}
        self._references: dict[str, str] = {}

    # -- state ---------------------------------------------------------------------------------

    def start(self, result: ReadResult, references: Mapping[str, str]) -> None:
        """Take the initial load's answers (every candidate it read) and reference values."""
        by_vault: dict[str, dict[Candidate, FetchedSecret]] = {}
        for resolution in result.resolutions:
            for candidate in resolution.tried:
                by_vault.setdefault(candidate.vault_url, {})[candidate] = result.observed[candidate]
        for url, answers in by_vault.items():
            detector = self._new_detector(url, [c.ref for c in answers])
            secrets = {c.ref.key: s for c, s in answers.items()}
            # Cached answers count from when their request was actually sent, not from now.
            detector.start(secrets, {key: s.sent_at or 0.0 for key, s in secrets.items()})
            self._detectors[url] = detector
        self._references = dict(references)

    def _new_detector(self, url: str, refs: Sequence[SecretRef]) -> ChangeDetector:
        return ChangeDetector(
            self._plan,
            self._pool.fetcher(url),
            self._pool.client(url),
            refs=refs,
            on_missing=self._on_missing,
            not_yet_valid=self._not_yet_valid,
            clock_skew=self._clock_skew,
            request_timeout=self._request_timeout,
        )

    @property
    def vaults(self) -> tuple[str, ...]:
        """The vault URLs watched."""
        return tuple(self._detectors)

    def modes(self) -> dict[str, str]:
        """Each vault's detection mode (``"list"`` or ``"get"``)."""
        return {url: detector.mode() for url, detector in self._detectors.items()}

    def mode(self) -> str:
        """The common mode of every vault, or ``"mixed"``."""
        modes = set(self.modes().values())
        return modes.pop() if len(modes) == 1 else ("get" if not modes else "mixed")

    @property
    def startup_timeout(self) -> float:
        return self._pool.startup_timeout

    # -- detection -----------------------------------------------------------------------------

    async def detect_names(self, names: Iterable[str], *, timeout: float) -> RoutedDetection:
        """Re-read the tracked secrets called ``names`` in every vault (push refresh)."""
        names = tuple(names)
        return await self._detect_all(
            {url: d.detect_names(names, timeout=timeout) for url, d in self._detectors.items()},
            time.monotonic() + timeout,
        )

    async def detect(self, *, timeout: float) -> RoutedDetection:
        """Look for changes in every vault at once, then read any chain's next candidates.

        Raises:
            VaultError: the first permanent error of any vault (naming it), or
                :class:`~kvconfig.VaultUnavailableError` when one kept failing past ``timeout``.
        """
        return await self._detect_all(
            {url: d.detect(timeout=timeout) for url, d in self._detectors.items()},
            time.monotonic() + timeout,
        )

    async def _detect_all(
        self, detections: Mapping[str, Coroutine[Any, Any, Detection]], deadline: float
    ) -> RoutedDetection:
        per_vault = await all_or_none(detections)
        requests = sum(d.requests for d in per_vault.values())
        added, extra = await self._read_further(per_vault, deadline)
        # The mode this pass used (a targeted re-read is "get" whatever the detectors prefer).
        modes = {d.mode for d in per_vault.values()}
        mode = modes.pop() if len(modes) == 1 else ("get" if not modes else "mixed")
        return RoutedDetection(per_vault, added, requests + extra, mode)

    def _seen(self, per_vault: Mapping[str, Detection]) -> dict[CandidateKey, FetchedSecret]:
        """The latest answer for every tracked candidate (this pass, else the last one)."""
        seen: dict[CandidateKey, FetchedSecret] = {}
        for url, detector in self._detectors.items():
            answers = detector.answers()
            if url in per_vault:
                answers.update(per_vault[url].observed)
            seen.update(((url, *key), secret) for key, secret in answers.items())
        return seen

    async def _read_further(
        self, per_vault: Mapping[str, Detection], deadline: float
    ) -> tuple[dict[Candidate, FetchedSecret], int]:
        """Read the next candidates of chains whose every tracked candidate is now missing."""
        seen = self._seen(per_vault)
        rest: list[tuple[Candidate, ...]] = []
        for candidates in self._chains:
            for index, candidate in enumerate(candidates):
                answer = seen.get(candidate.key)
                if answer is None:
                    rest.append(candidates[index:])
                    break
                if answer.status is not SecretStatus.MISSING:
                    break
        if not rest:
            return {}, 0
        result = await read_chains(
            self._pool,
            rest,
            max_age=0,
            timeout=max(0.0, deadline - time.monotonic()),
            strict=False,
        )
        return dict(result.observed), result.requests

    # -- decision ------------------------------------------------------------------------------

    def propose(self, detection: RoutedDetection, now: datetime | None = None) -> RoutedProposal:
        """Apply each vault's policies, then resolve every chain: one set of secrets."""
        per_vault = {
            url: detector.propose(detection.per_vault[url], now)
            for url, detector in self._detectors.items()
        }
        return self._assemble(detection, per_vault, detection.added)

    def without(self, proposal: RoutedProposal, names: Iterable[str]) -> RoutedProposal:
        """``proposal`` with the changes of the secrets called ``names`` (in any vault) left
        out: those keep the version the published settings were built from."""
        drop = {name.lower() for name in names}
        per_vault = {
            url: self._detectors[url].without(vault_proposal, drop)
            for url, vault_proposal in proposal.per_vault.items()
        }
        added = {
            candidate: secret
            for candidate, secret in proposal.detection.added.items()
            if candidate.ref.name.lower() not in drop
        }
        return self._assemble(proposal.detection, per_vault, added)

    def _assemble(
        self,
        detection: RoutedDetection,
        per_vault: Mapping[str, Proposal],
        added: Mapping[Candidate, FetchedSecret],
    ) -> RoutedProposal:
        held: dict[CandidateKey, FetchedSecret] = {}
        for url, proposal in per_vault.items():
            for key, secret in proposal.held.items():
                held[(url, *key)] = secret
        changes = [change for proposal in per_vault.values() for change in proposal.changes]
        for candidate, secret in added.items():
            held[candidate.key] = secret
            if secret.found:
                changes.append(
                    SecretChange(
                        name=candidate.ref.name,
                        old_version=None,
                        new_version=secret.version,
                        old_updated=None,
                        new_updated=secret.updated,
                        vault_url=candidate.vault_url,
                    )
                )
        slots: dict[Slot, FetchedSecret] = {}
        for planned, candidates in zip(self._plan.secrets, self._chains, strict=False):
            slots[planned.slot] = _resolve(candidates, held)
        references = dict(self._references)
        for found, candidates in zip(
            self._found, self._chains[len(self._plan.secrets) :], strict=True
        ):
            secret = _resolve(candidates, held)
            # A reference whose secret went away keeps its last value: the literal reference
            # text must never become the setting.
            if secret.found and secret.value is not None:
                references[found.text] = secret.value
        return RoutedProposal(detection, per_vault, slots, references, tuple(changes), added)

    def commit(self, proposal: RoutedProposal, rejected: Mapping[str, str] | None = None) -> None:
        """Make a proposal current (after its settings validated, or nothing changed).

        ``rejected``: lower-cased names (any vault) whose new version was left out because it
        does not validate, to why (see :meth:`ChangeDetector.commit`)."""
        for url, vault_proposal in proposal.per_vault.items():
            self._detectors[url].commit(vault_proposal, rejected)
        for candidate, secret in proposal.added.items():
            url = candidate.vault_url
            detector = self._detectors.get(url)
            if detector is None:
                detector = self._new_detector(url, [])
                detector.start({}, {})
                self._detectors[url] = detector
            detector.track(candidate.ref, secret, secret.sent_at or 0.0)
        self._references = dict(proposal.references)

    def issues(self) -> tuple[HealthIssue, ...]:
        """Every vault's reasons why the published settings differ from what it says."""
        return tuple(issue for detector in self._detectors.values() for issue in detector.issues())

    def warn_expired(self, now: datetime | None = None) -> None:
        for detector in self._detectors.values():
            detector.warn_expired(now)

    def next_check_in(self, lead: float, now: datetime | None = None) -> float | None:
        moments = [
            m
            for m in (d.next_check_in(lead, now) for d in self._detectors.values())
            if m is not None
        ]
        return min(moments) if moments else None

    @property
    def held(self) -> dict[CandidateKey, FetchedSecret]:
        """What every vault's current settings were built from, by (vault, name, version)."""
        return {
            (url, *key): secret
            for url, detector in self._detectors.items()
            for key, secret in detector.held.items()
        }


def _resolve(
    candidates: Sequence[Candidate], held: Mapping[CandidateKey, FetchedSecret]
) -> FetchedSecret:
    """The first candidate held as found or disabled; else the last one known to be missing."""
    last: FetchedSecret | None = None
    for candidate in candidates:
        secret = held.get(candidate.key)
        if secret is None:
            break
        last = secret
        if secret.status is not SecretStatus.MISSING:
            return secret
    if last is not None:
        return last
    return FetchedSecret(name=candidates[0].ref.name, status=SecretStatus.MISSING)
