"""Lifecycle: nothing is left behind, however often a vault is opened and however a call ends.

- 1000 open / load / close cycles of ``KeyVault`` and 200 ``watch`` enter / exit cycles: open
  file descriptors, asyncio tasks and unclosed aiohttp sessions return to the baseline.
- Cancellation at every await point: a load, a watch entry and a refresh are cancelled after
  k event-loop iterations for every k until they complete on their own (with latency injected so
  the requests are in flight), and after random small delays. Afterwards the same baseline holds
  and the vault still works (or was closed cleanly).

One emulator serves every cycle; its own server tasks are not counted.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from _figures import record
from _library import canary, live_sessions, make_vault, open_fds
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from kvconfig import KeyVault
from kvconfig.emulator import KeyVaultEmulator

OPEN_CYCLES = 1000
WATCH_CYCLES = 200


class Small(BaseSettings):
    api_key: SecretStr
    db_password: SecretStr
    region: str = "local"


def _seed(emu: KeyVaultEmulator) -> None:
    emu.seed({"api-key": canary(), "db-password": canary(), "region": canary()})


def client_tasks() -> list[str]:
    """Tasks other than the test itself and the emulator's server side (on this same loop)."""
    current = asyncio.current_task()
    names = []
    for task in asyncio.all_tasks():
        if task is current or task.done():
            continue
        coro = task.get_coro()
        qualname = getattr(coro, "__qualname__", "")
        module = getattr(getattr(coro, "cr_code", None), "co_filename", "")
        if qualname.startswith("RequestHandler.") or "kvconfig/emulator" in module:
            continue
        names.append(f"{task.get_name()}:{qualname}")
    return names


@dataclass(frozen=True)
class Footprint:
    fds: int
    tasks: tuple[str, ...]
    sessions: int


def footprint() -> Footprint:
    return Footprint(open_fds(), tuple(sorted(client_tasks())), live_sessions())


async def settle(baseline: Footprint, rounds: int = 100) -> Footprint:
    """The footprint once it is back at ``baseline`` (sockets close a loop turn or two after the
    client lets go, on both ends), or the last one seen after ``rounds`` short waits."""
    now = footprint()
    for _ in range(rounds):
        if now.fds <= baseline.fds and not now.tasks and now.sessions <= baseline.sessions:
            return now
        await asyncio.sleep(0.01)
        now = footprint()
    return now


async def _baseline(emu: KeyVaultEmulator) -> Footprint:
    # One warm-up cycle: process-wide lazies (SSL contexts, module imports) are not leaks.
    async with make_vault(emu) as vault:
        await vault.load(Small)
    return await settle(footprint())


@pytest.mark.slow
async def test_open_load_close_cycles_leave_nothing(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    _seed(emu)
    baseline = await _baseline(emu)
    peak_fds = baseline.fds
    for cycle in range(OPEN_CYCLES):
        async with make_vault(emu) as vault:
            settings = await vault.load(Small)
            assert settings.region.startswith("CANARY-")
            if cycle % 100 == 0:
                peak_fds = max(peak_fds, open_fds())
    after = await settle(baseline)
    record("library.lifecycle.open_load_close_cycles", OPEN_CYCLES)
    record("library.lifecycle.open_cycles.fds_leaked", max(0, after.fds - baseline.fds), target="0")
    record("library.lifecycle.open_cycles.tasks_leaked", len(after.tasks), target="0")
    record(
        "library.lifecycle.open_cycles.sessions_leaked",
        max(0, after.sessions - baseline.sessions),
        target="0",
    )
    assert after.fds <= baseline.fds, (baseline, after, peak_fds)
    assert after.tasks == (), after.tasks
    assert after.sessions <= baseline.sessions


@pytest.mark.slow
async def test_watch_cycles_leave_nothing(keyvault_emulator: KeyVaultEmulator) -> None:
    emu = keyvault_emulator
    _seed(emu)
    baseline = await _baseline(emu)
    async with make_vault(emu, ttl=0) as vault:
        for cycle in range(WATCH_CYCLES):
            async with vault.watch(Small, interval=0.01) as live:
                if cycle % 2:
                    await live.refresh()  # a refresh in between, sometimes a background one too
                await asyncio.sleep(0.005 * (cycle % 3))
            assert live.closed
    after = await settle(baseline)
    record("library.lifecycle.watch_cycles", WATCH_CYCLES)
    record(
        "library.lifecycle.watch_cycles.fds_leaked", max(0, after.fds - baseline.fds), target="0"
    )
    record("library.lifecycle.watch_cycles.tasks_leaked", len(after.tasks), target="0")
    record(
        "library.lifecycle.watch_cycles.sessions_leaked",
        max(0, after.sessions - baseline.sessions),
        target="0",
    )
    assert after.fds <= baseline.fds
    assert after.tasks == (), after.tasks
    assert after.sessions <= baseline.sessions


async def _cancel_after(make: Callable[[], Awaitable[object]], steps: int) -> bool:
    """Run ``make()`` as a task, cancel it after ``steps`` loop iterations. True if it finished
    before the cancellation could land."""
    task = asyncio.ensure_future(make())
    for _ in range(steps):
        if task.done():
            break
        await asyncio.sleep(0)
    finished = task.done()
    task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    if finished and isinstance(results[0], BaseException):
        raise results[0]
    if not finished and not task.cancelled():
        # Completed in the same iteration the cancel was requested: fine, but it must not fail.
        assert not isinstance(results[0], BaseException), repr(results[0])
    return finished


async def _sweep(
    name: str, run_once: Callable[[int], Awaitable[bool]], max_steps: int = 3000
) -> int:
    """Cancel at k = 0, 1, 2, ... iterations until the operation completes on its own; return
    how many runs were cancelled.

    How many iterations an operation spans depends on the machine: while a request or a backoff
    sleep is pending the loop spins, so a faster machine needs more of them (a retrying load
    took ~380 on one run and over 400 on the next). ``max_steps`` only bounds a real hang.
    """
    for steps in range(max_steps):
        if await run_once(steps):
            return steps
    raise AssertionError(f"{name} never completed within {max_steps} loop iterations")


@pytest.mark.slow
async def test_cancellation_at_every_await_point_leaves_nothing(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    emu = keyvault_emulator
    _seed(emu)
    baseline = await _baseline(emu)
    emu.faults.latency(1)  # requests stay in flight across several loop iterations
    counts: dict[str, int] = {}

    # 1. The first load of a fresh vault (priming: challenge, token, then the fan-out).
    async def fresh_load(steps: int) -> bool:
        async with make_vault(emu, ttl=0) as vault:
            finished = await _cancel_after(lambda: vault.load(Small), steps)
            assert (await vault.load(Small)).region.startswith("CANARY-")  # still works
        return finished

    counts["load_fresh"] = await _sweep("load (fresh vault)", fresh_load)

    # 2. Loads of one authenticated vault, reused across every cancellation.
    async with make_vault(emu, ttl=0) as vault:
        await vault.load(Small)

        async def warm_load(steps: int) -> bool:
            finished = await _cancel_after(lambda: vault.load(Small), steps)
            assert (await vault.load(Small)).region.startswith("CANARY-")
            return finished

        counts["load_warm"] = await _sweep("load (warm vault)", warm_load)

        # 2b. Loads that are retrying (two 503s first), cancelled mid-backoff or mid-request.
        async with make_vault(
            emu, ttl=0, retry_backoff=0.0005, retry_backoff_max=0.001
        ) as retrying_vault:
            await retrying_vault.load(Small)

            async def retrying_load(steps: int) -> bool:
                emu.faults.fail_next(2, status=503)
                finished = await _cancel_after(lambda: retrying_vault.load(Small), steps)
                emu.faults.clear()  # unused failures must not leak into the next run
                emu.faults.latency(1)
                assert (await retrying_vault.load(Small)).region.startswith("CANARY-")
                return finished

            counts["load_retrying"] = await _sweep("load (retrying)", retrying_load)

        # 3. Entering watch (a load, then the background task starts).
        async def enter_watch(steps: int) -> bool:
            async def enter_and_exit() -> None:
                async with vault.watch(Small, interval=0.01):
                    await asyncio.sleep(0)

            return await _cancel_after(enter_and_exit, steps)

        counts["watch_enter"] = await _sweep("watch entry", enter_watch)

        # 4. A refresh() caller cancelled (the shared refresh goes on), then the watcher closed
        #    while that refresh may still be in flight.
        async def refresh(steps: int) -> bool:
            async with vault.watch(Small, interval=60) as live:
                finished = await _cancel_after(live.refresh, steps)
            return finished

        counts["refresh"] = await _sweep("refresh", refresh)

        # 5. Closing the vault while a load is in flight: ClosedError or a result, never a hang.
    for _ in range(20):
        doomed = make_vault(emu, ttl=0)
        task = asyncio.ensure_future(doomed.load(Small))
        await asyncio.sleep(random.uniform(0, 0.02))
        await doomed.aclose()
        await asyncio.gather(task, return_exceptions=True)
        assert doomed.closed
    counts["close_during_load"] = 20

    # 6. Random small delays with random latency.
    emu.faults.latency((0, 5))
    async with make_vault(emu, ttl=0) as vault:
        for _ in range(50):
            task = asyncio.ensure_future(vault.load(Small))
            await asyncio.sleep(random.uniform(0, 0.01))
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert (await vault.load(Small)).region.startswith("CANARY-")
    counts["random_delay"] = 50
    emu.faults.clear()

    after = await settle(baseline)
    total = sum(counts.values())
    record("library.lifecycle.cancellations", total)
    for what, count in counts.items():
        record(f"library.lifecycle.cancellations.{what}", count)
    record(
        "library.lifecycle.cancellations.fds_leaked", max(0, after.fds - baseline.fds), target="0"
    )
    record("library.lifecycle.cancellations.tasks_leaked", len(after.tasks), target="0")
    record(
        "library.lifecycle.cancellations.sessions_leaked",
        max(0, after.sessions - baseline.sessions),
        target="0",
    )
    assert after.fds <= baseline.fds, (baseline, after)
    assert after.tasks == (), after.tasks
    assert after.sessions <= baseline.sessions
    assert all(
        counts[k] > 0 for k in ("load_fresh", "load_warm", "load_retrying", "watch_enter")
    ), counts


async def test_closed_vault_refuses_cleanly(keyvault_emulator: KeyVaultEmulator) -> None:
    """aclose() twice is fine; every later use raises ClosedError, not an aiohttp error."""
    from kvconfig import ClosedError

    _seed(keyvault_emulator)
    vault: KeyVault = make_vault(keyvault_emulator)
    await vault.load(Small)
    await vault.aclose()
    await vault.aclose()
    with pytest.raises(ClosedError):
        await vault.load(Small)
    with pytest.raises(ClosedError):
        async with vault.watch(Small):
            pass
