"""Refresh benchmark: what keeping settings fresh costs, and what a fleet does to one vault.

1. **Per refresh** (emulator in this process, its request log counts every request): for a
   vault of N secrets and a Settings class of K string fields (K of the N secrets), requests and
   wall time of one ``await live.refresh()``, vault unchanged and with one secret rotated,
   against the *naive* refresh of the App Configuration provider and Spring: re-GET every field
   (here ``KeyVault(ttl=0).load()``: the same concurrent fetch and validation, K GETs). Every
   request pays ``--latency-ms`` of injected latency. Before each run the clock moves to a new
   second, so every secret is *settled* (``updated`` counts whole seconds, see
   ``kvconfig._refresh._detect``). A rotated secret is read once more by the first list pass at
   least a
   second after its rotation (to rule out a second rotation within that second); that settling
   refresh is not part of the "one rotated" figures.
2. **Fleet**: R watchers (simulated replicas in this process, each its own ``KeyVault``, session
   and credential) watch one vault throttled at the real limits (``emu.faults.throttle``: 4000
   transactions per 10 s; ``--limit`` for a smaller share). The emulator runs in a child process
   (a pipe carries rotations and its request-log counts), so server and clients do not share a
   core. Time is compressed: ``--interval`` seconds instead of minutes. A secret is rotated every
   ``--spacing`` intervals; a replica's staleness is the time from the rotation until its
   ``on_change`` saw the new version. Reported: requests served and 429s (emulator log), failures
   visible to the application (exceptions out of ``watch()``, an invalid ``current``; target 0),
   background refresh attempts that failed and were retried, replicas unhealthy at the end, and
   p50/p99/max staleness in intervals (target p99 <= 2). ``--fleet-naive`` adds the fleet with
   detection forced to GET every field; ``--at-once`` a fleet whose replicas all start together.

Run (no extra dependencies; about 1.5 minutes with the defaults)::

    .venv/bin/python bench/bench_refresh.py
    .venv/bin/python bench/bench_refresh.py --skip-per-refresh --fleet-naive --limit 4000 1000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing
import statistics
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from azure.core.credentials import AccessToken
from pydantic import create_model
from pydantic_settings import BaseSettings

from kvconfig import ChangeEvent, KeyVault, LiveSettings
from kvconfig.emulator import CertificateAuthority, KeyVaultEmulator

# -- helpers --------------------------------------------------------------------------------------


def settings_class(names: list[str]) -> type[BaseSettings]:
    fields: dict[str, Any] = {n.replace("-", "_"): (str, ...) for n in names}
    return create_model("BenchSettings", __base__=BaseSettings, **fields)


async def next_second() -> None:
    now = time.time()
    await asyncio.sleep(math.floor(now) + 1.02 - now)


def vault_requests(emu: KeyVaultEmulator) -> tuple[int, int, int]:
    """(list pages, value GETs, other) served since the last clear, 401 challenges excluded."""
    lists = gets = other = 0
    for r in emu.requests:
        if r.status == 401:
            continue
        if r.method == "GET" and r.path == "/secrets":
            lists += 1
        elif r.method == "GET" and r.path.startswith("/secrets/"):
            gets += 1
        else:
            other += 1
    return lists, gets, other


def ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.1f}"


# -- part 1: per refresh -----------------------------------------------------------------------


@dataclass
class Case:
    n: int
    k: int
    rows: list[str] = field(default_factory=list)


async def per_refresh(ca: CertificateAuthority, n: int, k: int, runs: int, latency: float) -> str:
    async with KeyVaultEmulator(ca=ca) as emu:
        names = [f"s-{i:04d}" for i in range(n)]
        emu.seed({name: f"value-{name}" for name in names})
        tracked = names[:: max(1, n // k)][:k]
        cls = settings_class(tracked)
        await next_second()
        emu.faults.latency(latency)
        async with (
            KeyVault(emu.vault_url, emu.credential(), ca_file=emu.ca_file) as vault,
            KeyVault(emu.vault_url, emu.credential(), ca_file=emu.ca_file, ttl=0) as naive,
            vault.watch(cls, interval=3600, clock_skew=0) as live,
        ):
            await naive.load(cls)  # warm: authenticated, connections open
            await live.refresh()  # learns N (first pass lists when K > 1)
            mode = live.health.mode
            results: dict[str, tuple[tuple[int, int], list[float]]] = {}
            for scenario in ("unchanged", "changed"):
                for contender in ("kvconfig", "naive"):
                    times: list[float] = []
                    counts: tuple[int, int] = (0, 0)
                    for run in range(runs):
                        await next_second()  # everything settled (whole-second `updated`)
                        if scenario == "changed":
                            emu.set_secret(tracked[run % k], f"rotated-{run}-{contender}")
                        emu.clear_requests()
                        started = time.perf_counter()
                        if contender == "kvconfig":
                            event = await live.refresh()
                            assert (event is not None) == (scenario == "changed")
                        else:
                            await naive.load(cls)
                        times.append(time.perf_counter() - started)
                        lists, gets, _ = vault_requests(emu)
                        counts = (lists, gets)
                        if contender == "kvconfig" and scenario == "changed":
                            # The new version was read in its own second: the next refresh
                            # reads it once more to settle it (not counted here; see docstring).
                            await next_second()
                            await live.refresh()
                    results[f"{scenario}/{contender}"] = (counts, times)
    row = [f"| {n} | {k} | {mode} "]
    for scenario in ("unchanged", "changed"):
        (kl, kg), kt = results[f"{scenario}/kvconfig"]
        (_, ng), nt = results[f"{scenario}/naive"]
        row.append(f"| {kl} + {kg} = **{kl + kg}** | {ms(kt)} | {ng} | {ms(nt)} ")
    return "".join(row) + "|"


# -- part 2: the fleet -------------------------------------------------------------------------
#
# The emulator runs in its own process so that the 200 replicas' client work and the server's
# work do not share one core; a pipe carries the few commands (rotate, count the log).


def emulator_process(conn: Connection, n: int, latency: float, limit: int) -> None:
    """Child process: serve a throttled emulator until told to stop."""

    async def serve() -> None:
        async with KeyVaultEmulator() as emu:
            emu.seed({f"s-{i:04d}": f"value-s-{i:04d}" for i in range(n)})
            emu.faults.latency((latency / 2, latency * 1.5))
            # The real limits: 4000 transactions per 10 s per vault (or a share of it).
            emu.faults.throttle(True, transactions=limit, window_s=10.0)
            token = await emu.credential().get_token("https://vault.azure.net/.default")
            conn.send((emu.vault_url, str(emu.ca_file), token.token, token.expires_on))
            loop = asyncio.get_running_loop()
            while True:
                command, *args = await loop.run_in_executor(None, conn.recv)
                if command == "set":
                    conn.send(emu.set_secret(*args))
                elif command == "clear":
                    emu.clear_requests()
                    conn.send(None)
                elif command == "stats":
                    statuses = [r.status for r in emu.requests]
                    conn.send(
                        (
                            sum(1 for st in statuses if st == 429),
                            sum(1 for st in statuses if st not in (401, 429)),
                        )
                    )
                else:
                    conn.send(None)
                    return

    asyncio.run(serve())


class StaticCredential:
    """An ``AsyncTokenCredential`` handing out one token the emulator process issued."""

    def __init__(self, token: str, expires_on: int) -> None:
        self._token = AccessToken(token, expires_on)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self._token

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StaticCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass(eq=False)
class Replica:
    index: int
    live: LiveSettings[BaseSettings] | None = None
    seen: dict[str, float] = field(default_factory=dict)  # new version -> when seen

    def on_change(self, event: ChangeEvent) -> None:
        for change in event.secrets:
            if change.new_version is not None:
                self.seen.setdefault(change.new_version, time.monotonic())


async def fleet(
    *,
    replicas: int,
    n: int,
    k: int,
    interval: float,
    rotations: int,
    spacing: float,
    latency: float,
    naive: bool,
    limit: int,
    at_once: bool,
) -> str:
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    child = ctx.Process(target=emulator_process, args=(child_conn, n, latency, limit), daemon=True)
    child.start()
    loop = asyncio.get_running_loop()

    async def rpc(*command: Any) -> Any:
        conn.send(command)
        return await loop.run_in_executor(None, conn.recv)

    try:
        vault_url, ca_file, token, expires_on = await loop.run_in_executor(None, conn.recv)
        names = [f"s-{i:04d}" for i in range(n)]
        tracked = names[:: max(1, n // k)][:k]
        cls = settings_class(tracked)
        visible_failures = 0
        fleet_replicas = [Replica(i) for i in range(replicas)]
        stop = asyncio.Event()

        async def run_replica(replica: Replica) -> None:
            nonlocal visible_failures
            if not at_once:  # a rolling start: spread over one interval
                await asyncio.sleep(interval * replica.index / replicas)
            try:
                vault = KeyVault(
                    vault_url,
                    StaticCredential(token, expires_on),
                    ca_file=ca_file,
                    max_concurrency=8,
                )
                async with (
                    vault,
                    vault.watch(cls, interval=interval, on_change=replica.on_change) as live,
                ):
                    replica.live = live  # type: ignore[assignment]
                    if naive and live._detector is not None:
                        live._detector.list_forbidden = True  # GET every field, every time
                    await stop.wait()
            except Exception as exc:  # an application would see this
                visible_failures += 1
                print(f"  replica {replica.index} failed: {type(exc).__name__}: {exc}")

        await rpc("clear")
        started = time.monotonic()
        tasks = [asyncio.create_task(run_replica(r)) for r in fleet_replicas]
        await asyncio.sleep(interval * 4)  # everyone loaded and refreshing
        rotated: list[tuple[str, float]] = []
        for i in range(rotations):
            at = time.monotonic()
            rotated.append((await rpc("set", tracked[i % k], f"rotated-{i}"), at))
            await asyncio.sleep(spacing * interval)
        await asyncio.sleep(interval * 2)
        elapsed = time.monotonic() - started
        lives = [r.live for r in fleet_replicas if r.live is not None]
        invalid = sum(1 for live in lives if not isinstance(live.current, cls))
        failures = sum(live.health.failures for live in lives)
        refreshes = sum(live.health.refreshes for live in lives)
        unhealthy = sum(1 for live in lives if not live.health.healthy)
        stop.set()
        await asyncio.gather(*tasks)
        throttled, served = await rpc("stats")
        await rpc("stop")
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    staleness: list[float] = []
    for version, at in rotated:
        for r in fleet_replicas:
            seen = r.seen.get(version)
            staleness.append(math.inf if seen is None else (seen - at) / interval)
    staleness.sort()
    p50 = staleness[len(staleness) // 2]
    p99 = staleness[min(len(staleness) - 1, math.ceil(len(staleness) * 0.99) - 1)]
    missed = sum(1 for s in staleness if s == math.inf)
    label = "naive (GET every field)" if naive else "kvconfig"
    label += ", all start at once" if at_once else ""
    return (
        f"| {label} | {limit} / 10 s | {replicas} | {n} | {k} "
        f"| {interval:g} s | {elapsed:.0f} s "
        f"| {served} ({served / elapsed:.0f}/s) | {throttled} | {visible_failures + invalid} "
        f"| {failures} of {refreshes} | {unhealthy} "
        f"| {p50:.2f} | {p99:.2f} | {staleness[-1]:.2f} | {missed} |"
    )


# -- main --------------------------------------------------------------------------------------


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3, help="runs per per-refresh cell")
    parser.add_argument("--skip-per-refresh", action="store_true")
    parser.add_argument("--skip-fleet", action="store_true")
    parser.add_argument("--replicas", type=int, default=200)
    parser.add_argument("--fleet-n", type=int, default=100, help="secrets in the fleet's vault")
    parser.add_argument("--fleet-k", type=int, default=10, help="fields per replica")
    parser.add_argument("--interval", type=float, default=3.0, help="compressed refresh interval")
    parser.add_argument("--rotations", type=int, default=4)
    parser.add_argument("--spacing", type=float, default=3.0, help="intervals between rotations")
    parser.add_argument("--fleet-naive", action="store_true", help="also run the naive fleet")
    parser.add_argument(
        "--limit",
        type=int,
        nargs="*",
        default=[4000],
        help="transactions per 10 s the vault allows, one fleet run each (real: 4000)",
    )
    parser.add_argument(
        "--at-once",
        action="store_true",
        help="also run kvconfig with every replica starting at once",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the fleet's throttling warnings are expected

    ca = CertificateAuthority.generate()
    if not args.skip_per_refresh:
        print(f"## Requests and time per refresh ({args.latency_ms:g} ms latency per request)\n")
        print(
            "| N secrets | K fields | mode | unchanged: kvconfig requests (list + GET) | ms "
            "| naive GETs | ms | one rotated: kvconfig requests | ms | naive GETs | ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for n, k in ((100, 10), (100, 100), (1000, 10), (1000, 100)):
            print(await per_refresh(ca, n, k, args.runs, args.latency_ms), flush=True)
        print()
    if not args.skip_fleet:
        print(
            f"## Fleet: {args.replicas} replicas, one throttled vault, {args.rotations} rotations "
            f"{args.spacing:g} intervals apart\n"
        )
        print(
            "| detection | throttle | R | N | K | interval | run | requests served | 429s "
            "| failures visible to the app | background attempts failed (retried) "
            "| unhealthy at end | staleness p50 (intervals) | p99 | max | never seen |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        runs = [(False, limit, False) for limit in args.limit]
        if args.at_once:
            runs.append((False, 4000, True))
        if args.fleet_naive:
            runs.append((True, 4000, False))
        for naive, limit, at_once in runs:
            row = await fleet(
                replicas=args.replicas,
                n=args.fleet_n,
                k=args.fleet_k,
                interval=args.interval,
                rotations=args.rotations,
                spacing=args.spacing,
                latency=args.latency_ms,
                naive=naive,
                limit=limit,
                at_once=at_once,
            )
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
