"""``Health``: a snapshot of how fresh live settings are, for readiness probes and metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
        mode: How changes are detected now: ``"list"`` or ``"get"`` (``"mixed"`` when the
            vaults watched differ).
        vaults: Each vault watched (URL) and its mode; every vault chooses on its own.
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
    vaults: Mapping[str, str] = field(default_factory=dict)
