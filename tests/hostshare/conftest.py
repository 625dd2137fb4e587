"""The ``start_workers`` fixture: subprocess workers on one directory, reaped at teardown."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hostshare_helpers import INTERVAL, WORKER, StartWorkers, Worker


@pytest.fixture
async def start_workers(tmp_path: Path) -> AsyncIterator[StartWorkers]:
    """Start N workers on one directory at once; every one is reaped at teardown."""
    started: list[Worker] = []

    async def start(
        n: int, *, directory: Path | None = None, key: str = "vault|Settings"
    ) -> list[Worker]:
        shared = directory or tmp_path / "shared"
        procs = await asyncio.gather(
            *(
                asyncio.create_subprocess_exec(
                    sys.executable,
                    "-W",
                    "error",
                    str(WORKER),
                    str(shared),
                    key,
                    str(INTERVAL),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
                for _ in range(n)
            )
        )
        workers = [Worker(p) for p in procs]
        started.extend(workers)
        await asyncio.gather(*(w.wait_for(lambda e: e["ev"] == "ready") for w in workers))
        return workers

    yield start
    for worker in started:
        if worker.proc.returncode is None:
            worker.proc.kill()
        await worker.proc.wait()
        await worker._reader
        if worker.proc.stdin is not None:
            worker.proc.stdin.close()
