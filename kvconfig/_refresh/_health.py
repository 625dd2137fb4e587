"""``Health``: what an operator can act on about live settings, for probes, alerts and metrics.

Three separate questions, because they call for different actions:

- **serving** (readiness): a validated Settings instance is published and the watcher runs.
  True from the moment ``async with vault.watch(...)`` is entered until it is left, whatever the
  vault does afterwards: a replica keeps serving its last-known-good configuration through a
  vault outage, so a readiness probe must use this, not freshness (otherwise one vault blip
  takes every replica out of rotation at once).
- **fresh** (alerting): the last successful refresh is at most ``max_staleness`` old. False
  during a vault outage or any run of failed refreshes; page on it. Restarting does not help
  (a restarted process cannot load during an outage), so never let it drive a liveness probe.
- **degraded** (ticket): the configuration is served, fresh, but not what the vault says:
  ``issues`` lists each reason (a secret deleted or disabled whose last-known-good value is
  kept, a new version rejected because it does not validate, a list permission missing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = ["Health", "HealthIssue", "IssueKind"]

IssueKind = Literal["deleted", "disabled", "rejected", "list_forbidden"]


@dataclass(frozen=True, slots=True)
class HealthIssue:
    """One reason live settings are degraded. Names and versions only, never a value.

    Attributes:
        kind: ``"deleted"`` / ``"disabled"``: the secret is gone or disabled in the vault and
            its last-known-good value is kept (``on_missing="keep"``); ``"rejected"``: its
            newest version does not validate, so the previous one is kept (tried again at each
            refresh); ``"list_forbidden"``: the identity may not list secrets, so each refresh
            reads every tracked secret (more requests, same result).
        vault: The vault's URL.
        secret: The secret's name (``None`` for ``list_forbidden``).
        fields: The fields it provides, dotted (``"database.password"``).
        version: The version in use (``deleted``/``disabled``) or the one rejected.
        detail: kvconfig's explanation (validation messages name fields, never values).
    """

    kind: IssueKind
    vault: str
    secret: str | None
    fields: tuple[str, ...]
    version: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class Health:
    """How a :class:`~kvconfig.LiveSettings` is doing. Never holds a value.

    Readiness probes use ``serving``; alerts use ``fresh`` (page) and ``degraded`` (ticket).

    Attributes:
        serving: Ready: a validated Settings is published in ``live.current`` and the watcher
            runs (false only before entering and after closing).
        fresh: ``serving`` and ``staleness <= max_staleness``.
        degraded: ``issues`` is not empty.
        issues: Why it is degraded (:class:`HealthIssue`), in plan order.
        healthy: ``serving and fresh``, as before these were separate (kept for existing probes;
            new code should say which of the two it means).
        generation: The generation in ``live.current`` (0 = the initial load).
        last_success: When a refresh (or the initial load) last completed (UTC). A refresh
            that read the vault but had to reject a new value still completed.
        staleness: Seconds since ``last_success``.
        max_staleness: The staleness above which ``fresh`` turns false, in seconds.
        last_error: The latest refresh error or rejected value (kvconfig's message, or the
            exception type), kept after recovery; ``None`` if there was none.
        consecutive_failures: Refreshes failed since the last success (0 while fresh).
        refreshes: Refresh attempts so far (the initial load not counted).
        failures: Refresh attempts that failed so far.
        mode: How changes are detected now: ``"list"`` or ``"get"`` (``"mixed"`` when the
            vaults watched differ).
        vaults: Each vault watched (URL) and its mode; every vault chooses on its own.
        near_expiry: Watched secrets Key Vault reported ``SecretNearExpiry`` for (through
            ``notify()``), while the reported version is still the one in use.
        expired: Likewise for ``SecretExpired``.
        push_rereads: Targeted re-reads run for ``notify()`` events so far.
        push_pending: Secrets notified and waiting for their (randomly delayed) re-read.
        shared_role: With ``shared_dir``: ``"leader"`` (this process refreshes for the host),
            ``"follower"`` (it reads the leader's notices) or ``"solo"`` (the directory is
            unusable; it polls on its own); ``None`` without ``shared_dir``.
    """

    healthy: bool
    generation: int
    last_success: datetime
    staleness: float
    max_staleness: float
    last_error: str | None
    consecutive_failures: int
    refreshes: int
    failures: int
    mode: str
    serving: bool = False
    fresh: bool = False
    degraded: bool = False
    issues: tuple[HealthIssue, ...] = ()
    vaults: Mapping[str, str] = field(default_factory=dict)
    near_expiry: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    push_rereads: int = 0
    push_pending: int = 0
    shared_role: str | None = None
