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

3. **Fleet freshness** (``--push-fleet``, side by side in one run): ``--replicas`` watchers in
   ``--processes`` worker processes against one emulator throttled at the real limits, one
   rotation every ``--spacing`` x ``--interval`` seconds: (a) polling every ``--interval``
   seconds; (b) push (the emulator's Event Grid deliveries to one ``aiohttp_handler`` per process
   feeding its watchers' ``notify()``) with an hourly safety poll; (c) polling with
   ``shared_dir``, one directory per "host" whose workers are one watcher in each process.
   Reported from the emulator's request log between the first rotation and the end: list
   requests, GETs, per rotation and per hour at the run's rate (polling intervals are
   compressed: seconds, not minutes), and the propagation delay (rotation written -> the
   watcher's ``on_change``) over every watcher x rotation.

Run (no extra dependencies; about 1.5 minutes with the defaults)::

    .venv/bin/python bench/bench_refresh.py
    .venv/bin/python bench/bench_refresh.py --skip-per-refresh --fleet-naive --limit 4000 1000
    .venv/bin/python bench/bench_refresh.py --push-fleet            # part 3, ~3 minutes
    .venv/bin/python bench/bench_refresh.py --push-fleet --quick    # part 3, 40 watchers
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
                elif command == "subscribe":  # one webhook per fleet process (part 3)
                    await emu.subscribe(args[0], event_types=[NEW_VERSION])
                    conn.send(None)
                elif command == "counts":  # (list pages, value GETs, 429s) since "clear"
                    lists, gets, _ = vault_requests(emu)
                    conn.send((lists, gets, sum(1 for r in emu.requests if r.status == 429)))
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


# -- part 3: push and shared_dir at fleet scale ------------------------------------------------
#
# The same throttled emulator process; the watchers live in --processes worker processes
# (spawned), so the fleet's client work spreads like a real one's. Propagation delay is
# measured on the wall clock (one machine): rotation sent -> on_change saw the new version.

NEW_VERSION = "Microsoft.KeyVault.SecretNewVersionCreated"
SAFETY_POLL = 3600.0  # push mode: the hourly safety poll (never due during a run)


def fleet_worker(conn: Connection, mode: str, count: int, config: dict[str, Any]) -> None:
    """Child process: ``count`` watchers in ``mode`` ("poll", "push", "shared") until "stop"."""
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_fleet_worker(conn, mode, count, config))


async def _fleet_worker(conn: Connection, mode: str, count: int, config: dict[str, Any]) -> None:
    from aiohttp import web

    from kvconfig.integrations.eventgrid import aiohttp_handler

    loop = asyncio.get_running_loop()
    names = [f"s-{i:04d}" for i in range(config["n"])]
    tracked = names[:: max(1, config["n"] // config["k"])][: config["k"]]
    cls = settings_class(tracked)
    interval = config["interval"]
    seen: list[dict[str, float]] = [{} for _ in range(count)]
    lives: list[LiveSettings[BaseSettings]] = []
    failed: list[str] = []
    stop = asyncio.Event()

    async def watcher(i: int) -> None:
        await asyncio.sleep(interval * i / count)  # a rolling start over one interval
        options: dict[str, Any] = {"interval": interval}
        if mode == "push":
            options = {"interval": SAFETY_POLL, "notify_max_delay": config["notify_max_delay"]}
        elif mode == "shared":  # watcher i of every process is one worker of "host" i
            options["shared_dir"] = f"{config['hosts']}/host-{i:04d}"

        def on_change(event: ChangeEvent) -> None:
            for change in event.secrets:
                if change.new_version is not None:
                    seen[i].setdefault(change.new_version, time.time())

        try:
            vault = KeyVault(
                config["vault_url"],
                StaticCredential(config["token"], config["expires_on"]),
                ca_file=config["ca_file"],
                max_concurrency=8,
            )
            async with vault, vault.watch(cls, on_change=on_change, **options) as live:
                lives.append(live)  # type: ignore[arg-type]
                await stop.wait()
        except Exception as exc:  # an application would see this
            failed.append(f"{type(exc).__name__}: {exc}")

    tasks = [asyncio.create_task(watcher(i)) for i in range(count)]
    while len(lives) + len(failed) < count:  # noqa: ASYNC110 - counts, not one event
        await asyncio.sleep(0.05)
    runner = None
    url = None
    if mode == "push":  # one webhook per process, feeding all its watchers
        app = web.Application()
        app.router.add_route("*", "/events", aiohttp_handler(list(lives)))
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/events"
    conn.send(url)
    await loop.run_in_executor(None, conn.recv)  # "stop"
    health = [live.health for live in lives]
    summary = {
        "seen": seen,
        "failed": failed,
        "invalid": sum(1 for live in lives if not isinstance(live.current, cls)),
        "unhealthy": sum(1 for h in health if not h.healthy),
        "leaders": sum(1 for h in health if h.shared_role == "leader"),
        "background_failures": sum(h.failures for h in health),
    }
    stop.set()
    await asyncio.gather(*tasks)
    if runner is not None:
        await runner.cleanup()
    conn.send(summary)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * q) - 1))]


async def push_fleet(mode: str, args: argparse.Namespace, hosts: str) -> str:
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    emulator = ctx.Process(
        target=emulator_process,
        args=(child_conn, args.fleet_n, args.latency_ms, 4000),
        daemon=True,
    )
    emulator.start()
    loop = asyncio.get_running_loop()
    workers: list[tuple[Any, Connection]] = []

    async def rpc(*command: Any) -> Any:
        conn.send(command)
        return await loop.run_in_executor(None, conn.recv)

    try:
        vault_url, ca_file, token, expires_on = await loop.run_in_executor(None, conn.recv)
        config = {
            "vault_url": vault_url,
            "ca_file": ca_file,
            "token": token,
            "expires_on": expires_on,
            "n": args.fleet_n,
            "k": args.fleet_k,
            "interval": args.interval,
            "notify_max_delay": args.notify_max_delay,
            "hosts": hosts,
        }
        per_process = args.replicas // args.processes
        for _ in range(args.processes):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=fleet_worker, args=(child_end, mode, per_process, config), daemon=True
            )
            proc.start()
            workers.append((proc, parent_end))
        urls = [await loop.run_in_executor(None, end.recv) for _, end in workers]
        for url in urls:
            if url is not None:
                await rpc("subscribe", url)
        await asyncio.sleep(args.interval * 2)  # every watcher past its first pass
        names = [f"s-{i:04d}" for i in range(args.fleet_n)]
        tracked = names[:: max(1, args.fleet_n // args.fleet_k)][: args.fleet_k]
        await rpc("clear")
        started = time.time()
        rotated: list[tuple[str, float]] = []
        for i in range(args.rotations):
            at = time.time()
            rotated.append((await rpc("set", tracked[i % len(tracked)], f"{mode}-{i}"), at))
            await asyncio.sleep(args.spacing * args.interval)
        await asyncio.sleep(max(args.interval * 2, args.notify_max_delay + 1))
        lists, gets, throttled = await rpc("counts")
        elapsed = time.time() - started
        summaries = []
        for _, end in workers:
            end.send("stop")
        for _, end in workers:
            summaries.append(await loop.run_in_executor(None, end.recv))
        await rpc("stop")
    finally:
        for proc, _ in workers:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        emulator.join(timeout=10)
        if emulator.is_alive():
            emulator.kill()
    delays: list[float] = []
    watchers = 0
    for summary in summaries:
        for seen in summary["seen"]:
            watchers += 1
            for version, at in rotated:
                when = seen.get(version)
                delays.append(math.inf if when is None else when - at)
    missed = sum(1 for d in delays if d == math.inf)
    failures = sum(len(s["failed"]) + s["invalid"] for s in summaries)
    for summary in summaries:
        for line in summary["failed"][:3]:
            print(f"  {mode} watcher failed: {line}")
    label = {
        "poll": f"(a) polling every {args.interval:g} s",
        "push": f"(b) push, notify_max_delay={args.notify_max_delay:g} s, safety poll 1 h",
        "shared": f"(c) polling every {args.interval:g} s, shared_dir, "
        f"{args.processes} workers per host",
    }[mode]
    requests = lists + gets
    leaders = sum(s["leaders"] for s in summaries)
    return (
        f"| {label} | {watchers} in {args.processes} processes"
        + (f" ({leaders} hosts)" if mode == "shared" else "")
        + f" | {elapsed:.0f} s | {lists} | {gets} | {throttled} "
        f"| **{requests / len(rotated):.0f}** ({lists / len(rotated):.0f} lists) "
        f"| {requests / elapsed * 3600:,.0f} "
        f"| {percentile(delays, 0.5):.2f} | **{percentile(delays, 0.99):.2f}** "
        f"| {missed} of {len(delays)} | {failures} |"
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
    parser.add_argument(
        "--push-fleet",
        action="store_true",
        help="run only part 3: (a) polling, (b) push, (c) shared_dir, side by side",
    )
    parser.add_argument("--processes", type=int, default=4, help="part 3: worker processes")
    parser.add_argument("--notify-max-delay", type=float, default=2.0, help="part 3, push")
    parser.add_argument(
        "--quick", action="store_true", help="part 3 at a small scale (40 watchers, 3 rotations)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the fleet's throttling warnings are expected
    if args.push_fleet:
        if args.quick:
            args.replicas, args.rotations = 40, 3
        print(
            f"## Fleet freshness: {args.replicas} watchers in {args.processes} processes, one "
            f"vault throttled at 4000 / 10 s, {args.rotations} rotations "
            f"{args.spacing * args.interval:g} s apart, {args.latency_ms:g} ms latency\n"
        )
        print(
            "| mode | watchers | window | list requests | GETs | 429s | requests per rotation "
            "| requests per hour (at this rate) | propagation p50 (s) | p99 (s) | missed "
            "| failures |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        import tempfile

        for mode in ("poll", "push", "shared"):
            with tempfile.TemporaryDirectory() as hosts:
                print(await push_fleet(mode, args, hosts), flush=True)
        return 0

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
