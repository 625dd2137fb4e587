"""A worker process for the shared_dir tests: one HostShare, driven over stdin, reporting on stdout.

Usage: ``python worker.py DIR KEY INTERVAL``. Every interval a follower tries to lead and then
polls; a leader publishes a heartbeat. Output is one JSON object per line:

- ``{"ev": "ready", "pid", "role"}`` once entered; ``{"ev": "role", "role"}`` on every change;
- ``{"ev": "seen", "names": [...]}`` for each non-empty poll, ``{"ev": "fallback"}`` for ``None``;
- ``{"ev": "published", "seq"}`` after ``publish NAME[,NAME...] VERSION`` (leader only,
  ``{"ev": "not-leader"}`` otherwise); ``{"ev": "status", "role"}`` after ``status``;
- ``{"ev": "closed", "fds_before", "fds_after"}`` after ``quit``, then exit 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from kvconfig._refresh._hostshare import HostShare


@dataclass(frozen=True)
class Change:
    name: str
    new_version: str | None
    new_updated: datetime | None


def emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def main(path: str, key: str, interval: float) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    fds_before = open_fds()
    async with HostShare(path, key, interval=interval) as share:
        emit(ev="ready", pid=os.getpid(), role=share.role)
        role = share.role
        line_task = asyncio.ensure_future(stdin.readline())
        try:
            while True:
                if share.role == "follower":
                    await share.try_lead()
                if share.role != role:
                    role = share.role
                    emit(ev="role", role=role)
                if share.role == "follower":
                    names = await share.poll()
                    if names is None:
                        emit(ev="fallback")
                    elif names:
                        emit(ev="seen", names=sorted(names))
                elif share.role == "leader":
                    await share.publish(())  # heartbeat
                done, _ = await asyncio.wait({line_task}, timeout=interval)
                if not done:
                    continue
                words = line_task.result().decode().split()
                line_task = asyncio.ensure_future(stdin.readline())
                if not words or words[0] == "quit":
                    break
                if words[0] == "status":
                    emit(ev="status", role=share.role)
                elif words[0] == "publish":
                    if share.role != "leader":
                        emit(ev="not-leader")
                        continue
                    now = datetime.now(UTC)
                    changes = [Change(n, words[2], now) for n in words[1].split(",")]
                    emit(ev="published", seq=await share.publish(changes))
        finally:
            line_task.cancel()
            await asyncio.gather(line_task, return_exceptions=True)
    emit(ev="closed", fds_before=fds_before, fds_after=open_fds())
    transport.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
