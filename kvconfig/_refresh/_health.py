"""``Health``: a snapshot of how fresh live settings are, for readiness probes and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Health"]


@dataclass(frozen=True, slots=True)
class Health:
    """How fresh a :class:`~kvconfig.LiveSettings` is. Never holds a value.

    Attributes:
        healthy: ``staleness <= max_staleness`` and the watcher is running.
        generation: The generation in ``live.current`` (0 = the initial load).
        last_success: When a refresh (or the initial load) last completed (UTC).
        staleness: Seconds since ``last_success``.
        max_staleness: The staleness above which ``healthy`` turns false, in seconds.
        last_error: The latest refresh error (kvconfig's message, or the exception type), kept
            after recovery; ``None`` if no refresh has failed.
        consecutive_failures: Refreshes failed since the last success (0 when healthy and fresh).
        refreshes: Refresh attempts so far (the initial load not counted).
        failures: Refresh attempts that failed so far.
        mode: How changes are detected now: ``"list"`` or ``"get"``.
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
    near_expiry: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    push_rereads: int = 0
    push_pending: int = 0
    shared_role: str | None = None
