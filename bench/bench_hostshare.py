"""What shared_dir costs a process per interval, without the vault: poll, read, publish.

Times :class:`~kvconfig._refresh._hostshare.HostShare` operations on a private temp directory
(local disk), medians of interleaved rounds:

- **follower poll, unchanged**: the common case, an ``lstat`` and a heartbeat check;
- **follower poll, changed**: read + validate the notice file holding N notices;
- **leader publish**: one notice appended, file written (temp, ``fsync``, ``rename``) in a
  worker thread.

Run::

    .venv/bin/python bench/bench_hostshare.py              # N = 1, 100, 512 (the log's bound)
    .venv/bin/python bench/bench_hostshare.py --rounds 500
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kvconfig._refresh._hostshare import MAX_NOTICES, HostShare


@dataclass(frozen=True)
class Change:
    name: str
    new_version: str | None
    new_updated: datetime | None


def change(i: int) -> Change:
    return Change(f"secret-{i}", "0123456789abcdef0123456789abcdef", datetime.now(UTC))


async def measure(directory: Path, notices: int, rounds: int) -> tuple[float, float, float]:
    async with (
        HostShare(directory, f"bench-{notices}", interval=60) as leader,
        HostShare(directory, f"bench-{notices}", interval=60) as follower,
    ):
        await leader.publish([change(i) for i in range(notices - 1)])
        await follower.poll()
        idle, read, publish = [], [], []
        for i in range(rounds):
            t = time.perf_counter()
            await follower.poll()
            idle.append(time.perf_counter() - t)
            t = time.perf_counter()
            await leader.publish([change(i)])
            publish.append(time.perf_counter() - t)
            t = time.perf_counter()
            names = await follower.poll()
            read.append(time.perf_counter() - t)
            assert names == {f"secret-{i}"}
        return statistics.median(idle), statistics.median(read), statistics.median(publish)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    print("| notices in file | poll, unchanged | poll, changed | publish (fsync) |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 100, MAX_NOTICES):
            idle, read, publish = await measure(Path(tmp) / "shared", n, args.rounds)
            print(f"| {n} | {idle * 1e6:.1f} µs | {read * 1e6:.0f} µs | {publish * 1e3:.2f} ms |")


if __name__ == "__main__":
    asyncio.run(main())
