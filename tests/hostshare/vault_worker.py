"""A worker process reading the emulator with the real SDK, sharing change detection over a dir.

Usage: ``python vault_worker.py DIR INTERVAL NAME[,NAME...]`` with the emulator's environment
(``emu.environment()``). It enters a HostShare, loads every name (GETs), then every interval runs
the glue a ``LiveSettings`` will have: a follower tries to lead, then polls and GETs only the
names notified; the leader (or a follower told to fall back) lists the vault, GETs what moved and
publishes it. Prints one JSON object per line: ``ready``/``role``, ``got`` (name, version) for each
GET, ``listed`` for each list pass, ``fallback``; ``quit`` on stdin ends it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime

from azure.identity.aio import ManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient

from kvconfig._refresh._hostshare import HostShare


@dataclass(frozen=True)
class Change:
    name: str
    new_version: str | None
    new_updated: datetime | None


def emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main(path: str, interval: float, names: list[str]) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    versions: dict[str, str | None] = {}
    async with (
        ManagedIdentityCredential() as credential,
        SecretClient(
            os.environ["VAULT_URL"], credential, verify_challenge_resource=False
        ) as client,
        HostShare(path, f"{os.environ['VAULT_URL']}|Settings", interval=interval) as share,
    ):

        async def get(name: str) -> None:
            secret = await client.get_secret(name)
            versions[name] = secret.properties.version
            emit(ev="got", name=name, version=secret.properties.version)

        async def list_updated() -> dict[str, datetime | None]:
            listed = {p.name: p.updated_on async for p in client.list_properties_of_secrets()}
            emit(ev="listed")
            return listed

        await asyncio.gather(*(get(n) for n in names))  # the initial load
        listed: dict[str, datetime | None] | None = None
        emit(ev="ready", pid=os.getpid(), role=share.role)
        role = share.role
        quit_line = asyncio.ensure_future(stdin.readline())
        while not quit_line.done():
            if share.role == "follower":
                await share.try_lead()
            if share.role != role:
                role = share.role
                emit(ev="role", role=role)
            notified = await share.poll() if share.role == "follower" else None
            if notified is not None:
                await asyncio.gather(*(get(n) for n in sorted(notified)))
            else:
                if share.role == "follower":
                    emit(ev="fallback")
                now = await list_updated()
                moved = [] if listed is None else [n for n in names if now[n] != listed[n]]
                listed = now
                await asyncio.gather(*(get(n) for n in moved))
                await share.publish([Change(n, versions[n], now[n]) for n in moved])
            await asyncio.wait({quit_line}, timeout=interval)
    transport.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")))
