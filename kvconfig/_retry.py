"""The one retry/deadline policy: used by secret GETs, list pages and the refresh loop.

- :class:`Deadline`: a caller's own budget (monotonic). Every attempt gets at most what is left
  of it (token fetch included), so a load never outlives ``startup_timeout``.
- :class:`RetryPolicy`: full-jitter exponential backoff. A server's ``Retry-After`` is a *floor*
  on top of the jittered wait, never a replacement: ``Retry-After: 0`` (or a date in the past)
  cannot remove the backoff and turn a throttled vault into a request storm.
- The ``Retry-After`` hint travels on the error (``VaultUnavailableError.retry_after``), never
  in state shared by every load and watcher of a vault.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

__all__ = ["Deadline", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff between attempts.

    Attributes:
        backoff: First backoff ceiling in seconds; doubles per attempt.
        backoff_max: Largest backoff ceiling in seconds.
    """

    backoff: float
    backoff_max: float

    def delay(
        self, attempt: int, retry_after: float | None = None, *, cap: float | None = None
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Full jitter below ``min(cap, backoff * 2**(attempt-1))``, where ``cap`` defaults to
        ``backoff_max`` (the refresh loop passes its interval); ``retry_after`` raises the wait
        to at least that many seconds, it never lowers it.
        """
        limit = self.backoff_max if cap is None else cap
        ceiling = min(limit, max(self.backoff, 0.001) * 2.0 ** min(attempt - 1, 30))
        jittered = random.uniform(0.0, max(ceiling, 0.0))
        return jittered if retry_after is None else max(jittered, retry_after)


class Deadline:
    """A point in ``time.monotonic()`` time by which a caller wants an answer."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline ``seconds`` from now."""
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left (0 when passed)."""
        return max(0.0, self.at - time.monotonic())

    def allows(self, delay: float) -> bool:
        """Whether waiting ``delay`` seconds still leaves time before the deadline."""
        return time.monotonic() + delay < self.at

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f})"
