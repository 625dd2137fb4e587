"""Fault and load injection for the vault API, changeable while the emulator runs."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["Fault", "Faults", "Garble"]

Status = int | Literal["reset"]
Garble = Literal["truncate", "html"]


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do with one request instead of serving it."""

    status: Status
    retry_after: float | None = None


class _Bucket:
    """Token bucket: ``capacity`` tokens, refilled evenly over ``window_s`` seconds."""

    def __init__(self, capacity: int, window_s: float) -> None:
        self.capacity = capacity
        self.rate = capacity / window_s
        self.tokens = float(capacity)
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def available(self) -> bool:
        self._refill()
        return self.tokens >= 1

    def take(self) -> None:
        self.tokens -= 1


class Faults:
    """Knobs for latency, failures and throttling. All apply to vault API requests only.

    Order per request: latency, then outage, ``fail_next``, ``error_rate`` (these before the auth
    check, like a failing front end), then throttling (after auth; 429s do not consume tokens,
    as on the real service).
    """

    def __init__(self, latency_ms: float | tuple[float, float] = 0) -> None:
        self._latency: tuple[float, float] = (0.0, 0.0)
        self.latency(latency_ms)
        self._garble_next: list[Garble] = []
        self._fail_next: list[Fault] = []
        self._error_rate = 0.0
        self._error_status = 500
        self._outage = False
        self._throttle = False
        self.untrusted_tls = False
        self._limits = (4000, 300, 10.0)
        self._buckets: dict[str, tuple[_Bucket, _Bucket]] = {}
        self._rng = random.Random()
        # client_id ("" for every identity, None for the expire fault) -> (cutoff time, reason)
        self._token_cutoffs: dict[str | None, tuple[float, str]] = {}

    def __repr__(self) -> str:
        return (
            f"Faults(latency_ms={self._latency}, fail_next={len(self._fail_next)}, "
            f"error_rate={self._error_rate}, outage={self._outage}, throttle={self._throttle})"
        )

    def latency(self, ms: float | tuple[float, float]) -> None:
        """Add ``ms`` milliseconds to every request, or a uniform random delay in ``(lo, hi)``."""
        lo, hi = ms if isinstance(ms, tuple) else (ms, ms)
        if lo < 0 or hi < lo:
            raise ValueError("latency must be >= 0 and lo <= hi")
        self._latency = (float(lo), float(hi))

    def fail_next(self, n: int = 1, status: Status = 503, retry_after: float | None = None) -> None:
        """Fail the next ``n`` requests with ``status`` (``"reset"`` drops the connection).

        ``retry_after`` (seconds) adds a ``Retry-After`` header; note the SDK then retries any
        status >= 400.
        """
        self._fail_next.extend(Fault(status, retry_after) for _ in range(n))

    def error_rate(self, rate: float, status: int = 500) -> None:
        """Fail a random fraction ``rate`` (0..1) of requests with ``status``; 0 turns it off."""
        if not 0 <= rate <= 1:
            raise ValueError("rate must be within [0, 1]")
        self._error_rate = rate
        self._error_status = status

    def throttle(
        self,
        on: bool = True,
        *,
        transactions: int = 4000,
        creates: int = 300,
        window_s: float = 10.0,
    ) -> None:
        """Throttle at the service limits: per vault per ``window_s``, ``transactions`` requests of
        any kind and ``creates`` secret creations; excess requests get 429 ``Throttled``."""
        self._throttle = on
        self._limits = (transactions, creates, window_s)
        self._buckets.clear()

    def outage(self, on: bool = True) -> None:
        """Answer every request 503 until ``outage(False)``."""
        self._outage = on

    def untrusted_certificate(self, on: bool = True) -> None:
        """New TLS connections get a certificate from a CA no client trusts, until turned off.

        What a client sees when a TLS-inspecting proxy or a rotated certificate breaks trust:
        ``CERTIFICATE_VERIFY_FAILED``. Connections already open carry on; follow with
        ``fail_next(n, status="reset")`` to drop them.
        """
        self.untrusted_tls = on

    def garble_next(self, n: int = 1, how: Garble = "truncate") -> None:
        """Spoil the body of the next ``n`` successful (2xx) responses; the status stays.

        ``"truncate"`` cuts the JSON body in half (a proxy dropping the rest), ``"html"``
        replaces it with a gateway's HTML page: what a client sees when something between it and
        the vault mangles an answer. The truncated half can hold part of a secret value.
        """
        if how not in ("truncate", "html"):
            raise ValueError("how must be 'truncate' or 'html'")
        self._garble_next.extend(how for _ in range(n))

    # -- token faults (what Entra and Key Vault do to tokens a client holds) -----------------

    def expire_tokens(self) -> None:
        """Every token issued until now is treated as expired (401): clients must get new ones.

        Tokens issued afterwards are valid. Models a credential holding a token past its
        lifetime (e.g. after a laptop slept); see also the emulator's ``token_lifetime_s``.
        """
        self._token_cutoffs[None] = (time.time(), "expired")

    def revoke_tokens(self, client_id: str | None = None) -> None:
        """Every token issued until now, of one identity (``client_id``) or all, is revoked
        (401): as when Entra revokes a session or an identity's credentials are reset."""
        self._token_cutoffs[client_id.lower() if client_id else ""] = (time.time(), "revoked")

    def claims_challenge(self, client_id: str | None = None) -> None:
        """Continuous access evaluation: every token issued until now, of one identity
        (``client_id``) or all, is answered 401 with a CAE claims challenge
        (``WWW-Authenticate: Bearer ..., error="insufficient_claims", claims="..."``), as Key
        Vault answers a CAE token (the SDK always asks for one) after Entra revoked its session.
        The SDK gets a new token with those claims and retries once; tokens issued afterwards
        are accepted."""
        self._token_cutoffs[client_id.lower() if client_id else ""] = (time.time(), "claims")

    def token_rejection(self, client_id: str, issued_at: float) -> str | None:
        """Why a token of ``client_id`` issued at ``issued_at`` is refused, or None."""
        for key in (None, "", client_id.lower()):
            cutoff = self._token_cutoffs.get(key)
            if cutoff is not None and issued_at <= cutoff[0]:
                return cutoff[1]
        return None

    def clear(self) -> None:
        """Turn every fault off (latency included)."""
        self._latency = (0.0, 0.0)
        self._fail_next.clear()
        self._garble_next.clear()
        self._error_rate = 0.0
        self._outage = False
        self._throttle = False
        self.untrusted_tls = False
        self._buckets.clear()
        self._token_cutoffs.clear()

    # -- used by the server --------------------------------------------------------------------

    def delay_s(self) -> float:
        lo, hi = self._latency
        return (lo if lo == hi else self._rng.uniform(lo, hi)) / 1000

    def before_auth(self) -> Fault | None:
        """The fault for this request, decided before authentication, if any."""
        if self._outage:
            return Fault(503)
        if self._fail_next:
            return self._fail_next.pop(0)
        if self._error_rate and self._rng.random() < self._error_rate:
            return Fault(self._error_status)
        return None

    def garble(self, status: int, body: bytes) -> bytes | None:
        """The spoiled body for this response if ``garble_next`` asked for one, else ``None``."""
        if not 200 <= status < 300 or not self._garble_next:
            return None
        how = self._garble_next.pop(0)
        if how == "html":
            return b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        return body[: len(body) // 2]

    def throttled(self, vault: str, is_create: bool) -> bool:
        """Count an authenticated request; True if it must be answered 429."""
        if not self._throttle:
            return False
        transactions, creates, window_s = self._limits
        buckets = self._buckets.get(vault)
        if buckets is None:
            buckets = self._buckets[vault] = (
                _Bucket(transactions, window_s),
                _Bucket(creates, window_s),
            )
        total, create = buckets
        if not total.available() or (is_create and not create.available()):
            return True
        total.take()
        if is_create:
            create.take()
        return False
