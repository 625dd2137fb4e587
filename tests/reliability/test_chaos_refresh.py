"""Chaos refresh: live settings keep serving a valid configuration through scripted vault faults.

A watcher (interval 0.2 s) runs while the emulator goes through phases: 30 % random 5xx, a 429
storm without ``Retry-After`` (the real throttle) and one with it, a "60 s outage" compressed to a
few intervals, latency spikes longer than the interval, and connection resets. Secrets are
rotated during every phase, once with a value that does not validate. Meanwhile a reader task
reads ``live.current`` in a tight loop and checks every snapshot:

- it is a complete ``ChaosSettings`` instance;
- every field holds a value the test wrote to its secret (a *published generation*), never the
  invalid one;
- no field ever goes back to an older generation than one already served.

After each phase the faults are cleared and the secrets rotated at once; the time until the
reader sees that rotation is the *convergence time*, in intervals.

Figures: background-task crashes (target 0), invalid snapshots (0), failed reads (0), and the
worst convergence: raw, and without the publishing refresh's own duration (target <= 1 interval).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import pytest
from _figures import record
from _library import canary, make_vault
from pydantic import SecretStr, StringConstraints
from pydantic_settings import BaseSettings

from kvconfig import ChangeEvent, LiveSettings
from kvconfig.emulator import KeyVaultEmulator

INTERVAL = 0.2
PHASE = 8 * INTERVAL  # how long each fault lasts
FIELDS = ("api_key", "db_password", "token", "region")

Token = Annotated[str, StringConstraints(pattern=r"^CANARY-[0-9a-f]{32}-g\d+$")]


class ChaosSettings(BaseSettings):
    api_key: SecretStr
    db_password: SecretStr
    token: Token  # the rotation to "...-bad" does not validate
    region: str


def _plain(settings: ChaosSettings, name: str) -> str:
    value = getattr(settings, name)
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


@dataclass
class Generations:
    """Every value written per field, with the generation that wrote it."""

    values: dict[str, dict[str, int]] = field(default_factory=lambda: {f: {} for f in FIELDS})
    latest: int = -1

    def rotate(self, emu: KeyVaultEmulator) -> int:
        """Write a new generation of all four secrets at once; return its number."""
        self.latest += 1
        gen = self.latest
        secrets = {}
        for name in FIELDS:
            value = canary(f"g{gen}")
            self.values[name][value] = gen
            secrets[name.replace("_", "-")] = value
        emu.seed(secrets)  # synchronous: the emulator on this loop sees all four at once
        return gen


@dataclass
class Reader:
    """Reads ``live.current`` in a tight loop and validates each snapshot."""

    live: LiveSettings[ChaosSettings]
    generations: Generations
    reads: int = 0
    invalid: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, -1))
    first_seen: dict[int, float] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            try:
                snapshot = self.live.current
                self.reads += 1
                self._check(snapshot)
            except Exception as exc:  # a read must never fail
                self.failed += 1
                self.problems.append(f"read failed: {type(exc).__name__}")
            await asyncio.sleep(0)

    def _check(self, snapshot: object) -> None:
        if not isinstance(snapshot, ChaosSettings):
            self._bad(f"not a ChaosSettings: {type(snapshot).__name__}")
            return
        gens = []
        for name in FIELDS:
            gen = self.generations.values[name].get(_plain(snapshot, name))
            if gen is None:
                self._bad(f"{name}: a value the test never published")
                return
            if gen < self.served[name]:
                self._bad(f"{name}: went back from generation {self.served[name]} to {gen}")
                return
            gens.append(gen)
        for name, gen in zip(FIELDS, gens, strict=True):
            self.served[name] = gen
        oldest = min(gens)
        if oldest not in self.first_seen:
            self.first_seen[oldest] = time.monotonic()

    def _bad(self, problem: str) -> None:
        self.invalid += 1
        if len(self.problems) < 20:
            self.problems.append(problem)

    async def wait_for(self, gen: int, timeout: float = 10.0) -> float:
        """When every field first showed generation ``gen`` (or later)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = [first for g, first in self.first_seen.items() if g >= gen]
            if seen:
                return min(seen)
            await asyncio.sleep(INTERVAL / 20)
        raise AssertionError(f"generation {gen} never served; served {self.served}")


class ErrorLog(logging.Handler):
    """kvconfig's ERROR records: "failed unexpectedly" means a bug escaped classification."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(record.getMessage().splitlines()[0])


def time_refreshes(live: LiveSettings[ChaosSettings]) -> list[tuple[float, float]]:
    """Record (start, end) of every refresh the watcher makes, in order (a spy calling through)."""
    spans: list[tuple[float, float]] = []
    original = live._refresh_once

    async def timed() -> ChangeEvent | None:
        start = time.monotonic()
        try:
            return await original()
        finally:
            spans.append((start, time.monotonic()))

    live._refresh_once = timed  # type: ignore[method-assign]
    return spans


def waited_intervals(spans: list[tuple[float, float]], cleared: float, seen: float) -> float:
    """How long the refresh that published the change waited to start, in intervals: from the
    fault clearing, or from the end of the refresh before it if that ended later (a refresh that
    read the vault just before the change cannot have seen it)."""
    started = [span for span in spans if span[0] < seen]
    publishing = started[-1]
    previous_end = started[-2][1] if len(started) > 1 else cleared
    return (publishing[0] - max(cleared, previous_end)) / INTERVAL


Phase = Callable[[KeyVaultEmulator], None]


def _error_rate(emu: KeyVaultEmulator) -> None:
    emu.faults.error_rate(0.3, status=503)


def _error_rate_500(emu: KeyVaultEmulator) -> None:
    emu.faults.error_rate(0.3, status=500)


def _throttle(emu: KeyVaultEmulator) -> None:
    # The real throttle (429 "Throttled", no Retry-After) with a tiny bucket: a storm.
    emu.faults.throttle(True, transactions=3, creates=300, window_s=10.0)


def _throttle_retry_after(emu: KeyVaultEmulator) -> None:
    # Retry-After below the interval: the server's hint is honoured, the cap still holds.
    emu.faults.fail_next(10_000, status=429, retry_after=INTERVAL / 2)


def _outage(emu: KeyVaultEmulator) -> None:
    emu.faults.outage(True)


def _latency(emu: KeyVaultEmulator) -> None:
    emu.faults.latency((INTERVAL * 250, INTERVAL * 2000))  # 0.25 .. 2 intervals per request


def _resets(emu: KeyVaultEmulator) -> None:
    emu.faults.fail_next(10_000, status="reset")


PHASES: dict[str, Phase] = {
    "error_rate_503": _error_rate,
    "error_rate_500": _error_rate_500,
    "throttle_429": _throttle,
    "throttle_429_retry_after": _throttle_retry_after,
    "outage": _outage,
    "latency_spikes": _latency,
    "connection_resets": _resets,
}


async def _during(seconds: float, every: float, action: Callable[[], object]) -> None:
    """Call ``action`` every ``every`` seconds for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(every)
        action()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["list", "get"])
async def test_watcher_survives_scripted_faults(
    keyvault_emulator: KeyVaultEmulator, mode: str
) -> None:
    """Both ways of detecting changes: one list pass plus GETs of what changed ("list"), or a
    GET per tracked secret when the vault is too big for listing to pay ("get")."""
    emu = keyvault_emulator
    generations = Generations()
    generations.rotate(emu)
    if mode == "get":
        # 4 tracked secrets < 5 list pages: reading each secret is cheaper than listing.
        emu.seed({f"filler-{i}": canary() for i in range(4 * 25)})
    logs = ErrorLog()
    kv_logger = logging.getLogger("kvconfig")
    kv_logger.addHandler(logs)
    converge: dict[str, float] = {}
    waits: dict[str, float] = {}
    try:
        async with (
            make_vault(emu, ttl=0) as vault,
            vault.watch(ChaosSettings, interval=INTERVAL) as live,
        ):
            spans = time_refreshes(live)  # before the first refresh (one interval away)
            await live.refresh()  # the first list pass learns the vault's size
            assert live.health.mode == mode
            reader = Reader(live, generations)
            reading = asyncio.create_task(reader.run())
            try:
                for name, start in PHASES.items():
                    start(emu)

                    def rotate_invalid() -> None:
                        # A rotation whose token does not validate: must never be served.
                        emu.set_secret("token", canary("bad"))

                    await _during(PHASE / 2, INTERVAL * 1.5, lambda: generations.rotate(emu))
                    rotate_invalid()
                    await asyncio.sleep(PHASE / 2)
                    emu.faults.clear()
                    cleared = time.monotonic()
                    gen = generations.rotate(emu)
                    seen = await reader.wait_for(gen)
                    converge[name] = (seen - cleared) / INTERVAL
                    waits[name] = waited_intervals(spans, cleared, seen)
                    await asyncio.sleep(INTERVAL)  # a quiet interval between phases
                task = live._task
                crashes = 1 if task is None or task.done() else 0
            finally:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
            health = live.health
    finally:
        kv_logger.removeHandler(logs)

    unexpected = [m for m in logs.errors if "unexpectedly" in m]
    worst = max(converge.values())
    prefix = f"library.chaos.{mode}"
    record(f"{prefix}.phases", len(PHASES))
    record(f"{prefix}.reads", reader.reads)
    record(f"{prefix}.refresh_attempts", health.refreshes)
    record(f"{prefix}.refresh_failures", health.failures)
    record(f"{prefix}.crashes", crashes + len(unexpected), target="0")
    record(f"{prefix}.invalid_snapshots", reader.invalid, target="0")
    record(f"{prefix}.failed_reads", reader.failed, target="0")
    # Until the reader saw the rotation (includes requests still slowed by the cleared latency).
    record(f"{prefix}.converge_intervals_max", round(worst, 2))
    # How long the publishing refresh waited to start: what backoff and the interval decide.
    waited = max(waits.values())
    record(f"{prefix}.converge_wait_intervals_max", round(waited, 2), target="<= 1 interval")
    for name, value in converge.items():
        record(f"{prefix}.converge_intervals.{name}", round(value, 2))

    assert crashes == 0, "the background refresh task died"
    assert unexpected == [], unexpected
    assert reader.invalid == 0, reader.problems
    assert reader.failed == 0, reader.problems
    assert reader.reads > 1000
    assert health.failures > 0, "the faults never reached the watcher"
    assert generations.latest in [reader.served[f] for f in FIELDS]
    # Backoff (and the jittered interval) is capped by the interval, so the refresh that publishes
    # the rotation starts within one interval of the fault clearing; only its own duration (a few
    # requests on a busy 2-core box) may come on top. The delays chosen are checked exactly by
    # test_refresh_delays_never_exceed_the_interval; what is measured here also holds the event
    # loop's lateness in firing timers, which reached 1.008 intervals on a loaded 2-core machine,
    # so a quarter interval of slack keeps this a check of the policy, not of the machine.
    assert waited <= 1.25, (converge, waits)


async def test_refresh_delays_never_exceed_the_interval(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    """The jittered interval, like the failure backoff, is at most one interval, so a change made
    when a fault clears is picked up within one interval (with +-10 % jitter: 1.09 intervals)."""
    async with make_vault(keyvault_emulator) as vault:
        live = vault.watch(ChaosSettings, interval=INTERVAL)  # not entered: no I/O
        delays = [live._next_delay() for _ in range(2000)]
    assert max(delays) <= INTERVAL
    assert min(delays) >= 0.9 * INTERVAL  # still spread out, so replicas do not poll in step
