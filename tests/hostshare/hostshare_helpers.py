"""Subprocess workers sharing one directory (see ``worker.py``), and file helpers."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")
INTERVAL = 0.1
HANG = 30.0  # "did not hang" bound for anything the tests wait for


class Worker:
    """One ``worker.py`` process: send commands, wait for the events it prints."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            async with self._changed:
                self.events.append(json.loads(line))
                self._changed.notify_all()
        async with self._changed:
            self.events.append({"ev": "eof"})
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, since: int = 0
    ) -> dict[str, Any]:
        """The first event from index ``since`` on (past or future) matching ``predicate``."""

        async def find() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for event in self.events[since:]:
                        if predicate(event):
                            return event
                    if self.events and self.events[-1]["ev"] == "eof":
                        raise AssertionError(f"worker {self.pid} exited: {self.events}")
                    await self._changed.wait()

        return await asyncio.wait_for(find(), HANG)

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    async def status(self) -> str:
        since = len(self.events)
        await self.send("status")
        return str((await self.wait_for(lambda e: e["ev"] == "status", since=since))["role"])

    def seen(self) -> set[str]:
        return {n for e in self.events if e["ev"] == "seen" for n in e["names"]}

    def role(self) -> str:
        roles = [e["role"] for e in self.events if e["ev"] in ("ready", "role")]
        return roles[-1] if roles else "?"

    async def quit(self) -> dict[str, Any]:
        await self.send("quit")
        closed = await self.wait_for(lambda e: e["ev"] == "closed")
        assert await asyncio.wait_for(self.proc.wait(), HANG) == 0
        await self._reader
        return closed

    async def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), HANG)
        await self._reader


StartWorkers = Callable[..., Awaitable[list[Worker]]]


def modes(directory: Path) -> tuple[int, set[int]]:
    """The directory's permission bits and those of the files in it."""
    return stat.S_IMODE(directory.stat().st_mode), {
        stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()
    }


def listing(directory: Path) -> list[str]:
    """Names in ``directory`` (none if it is not one)."""
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
