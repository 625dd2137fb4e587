"""A worker process running a real ``LiveSettings`` with ``watch(..., shared_dir=DIR)``.

Usage: ``python live_worker.py DIR INTERVAL`` with the emulator's environment
(``emu.environment()``); the vault holds the secrets ``alpha`` ... ``foxtrot``. Prints one JSON
object per line:

- ``{"ev": "ready", "pid", "role"}`` once the watcher is entered; ``{"ev": "role", "role"}``
  whenever ``health.shared_role`` changes;
- ``{"ev": "changed", "generation", "values"}`` for every published change (test values only);
- ``{"ev": "status", "role", "lists", "gets", "refreshes"}`` after ``status``: this process's own
  list passes and targeted re-reads, counted from kvconfig's per-refresh INFO lines;
- ``{"ev": "closed"}`` after ``quit``, then exit 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys

from azure.identity.aio import ManagedIdentityCredential
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import KeyVault

NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVCONFIG_LIVE_WORKER_")

    alpha: str
    bravo: str
    charlie: str
    delta: str
    echo: str
    foxtrot: str


class Count(logging.Handler):
    """Counts this process's refreshes by detection mode (one INFO line per refresh)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lists = self.gets = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("refreshed "):
            if "(list mode)" in message:
                self.lists += 1
            elif "(get mode)" in message:
                self.gets += 1


def emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main(path: str, interval: float) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    count = Count()
    kvlog = logging.getLogger("kvconfig")
    kvlog.setLevel(logging.INFO)
    kvlog.addHandler(count)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    vault = KeyVault(
        os.environ["VAULT_URL"], ManagedIdentityCredential(), ca_file=os.environ["SSL_CERT_FILE"]
    )
    async with vault, vault.watch(Settings, interval=interval, shared_dir=path) as live:
        role = live.health.shared_role
        emit(ev="ready", pid=os.getpid(), role=role)

        async def changes() -> None:
            async for change in live.changes():
                emit(ev="changed", generation=change.generation, values=live.current.model_dump())

        async def roles() -> None:
            nonlocal role
            while True:
                await asyncio.sleep(interval / 4)
                if live.health.shared_role != role:
                    role = live.health.shared_role
                    emit(ev="role", role=role)

        tasks = [asyncio.ensure_future(changes()), asyncio.ensure_future(roles())]
        while line := (await stdin.readline()).decode().strip():
            if line == "status":
                health = live.health
                emit(
                    ev="status",
                    role=health.shared_role,
                    lists=count.lists,
                    gets=count.gets,
                    refreshes=health.refreshes,
                )
            elif line == "quit":
                break
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    emit(ev="closed")
    transport.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
