"""End to end on the real emulator with the real SDK: one list pass per host, GETs of what changed.

The glue a ``LiveSettings`` will have is written here: the leader lists the vault, GETs the
secrets whose ``updated`` time moved and publishes them; followers GET only the names notified.
Once with four real worker processes (``vault_worker.py``), then in one process with four
clients and four shares (each its own lock descriptor, so they elect as processes do), where
the order of the ticks can be scripted.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import hostshare_helpers
import pytest
from azure.core.pipeline.transport import AioHttpTransport
from azure.keyvault.secrets.aio import SecretClient

from kvconfig._refresh._hostshare import HostShare
from kvconfig.emulator import KeyVaultEmulator

NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
VAULT_WORKER = Path(__file__).with_name("vault_worker.py")


@dataclass(frozen=True)
class Change:
    name: str
    new_version: str | None
    new_updated: datetime | None


@dataclass
class Worker:
    """What one worker process holds: its client, its share and its values (test-only state)."""

    client: SecretClient
    share: HostShare
    values: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    listed: dict[str, datetime | None] = field(default_factory=dict)

    async def get(self, name: str) -> None:
        secret = await self.client.get_secret(name)
        assert secret.value is not None
        self.values[name] = secret.value
        self.versions[name] = secret.properties.version

    async def list_updated(self) -> dict[str, datetime | None]:
        return {p.name: p.updated_on async for p in self.client.list_properties_of_secrets()}

    async def tick(self) -> None:
        """One refresh interval, as LiveSettings will run it."""
        if self.share.role == "follower":
            await self.share.try_lead()
        if self.share.role == "follower":
            names = await self.share.poll()
            if names is not None:
                await asyncio.gather(*(self.get(n) for n in sorted(names)))
                return
        # Leader (or a follower falling back): one list pass, then GETs of what moved.
        listed = await self.list_updated()
        moved = [n for n in NAMES if listed.get(n) != self.listed.get(n)]
        self.listed = listed
        await asyncio.gather(*(self.get(n) for n in moved))
        if self.share.role == "leader":
            await self.share.publish([Change(n, self.versions[n], listed[n]) for n in moved])


def vault_requests(emu: KeyVaultEmulator, since: int) -> tuple[int, dict[str, int]]:
    """List requests and value GETs per secret name, authenticated ones only, from ``since``."""
    lists, gets = 0, dict.fromkeys(NAMES, 0)
    for r in emu.requests[since:]:
        parts = [p for p in r.path.split("/") if p]
        if r.method != "GET" or r.status == 401 or not parts or parts[0] != "secrets":
            continue
        if len(parts) == 1:
            lists += 1
        else:
            gets[parts[1]] += 1
    return lists, gets


async def test_worker_processes_share_one_list_pass_per_host(
    keyvault_emulator: KeyVaultEmulator, tmp_path: Path
) -> None:
    """Four processes: only the leader lists; a rotation costs one GET of it per process."""
    emu = keyvault_emulator
    emu.seed({n: f"{n}-1" for n in NAMES}, created=datetime.now(UTC) - timedelta(hours=1))
    env = {**os.environ, **emu.environment(), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-W", "error", str(VAULT_WORKER), str(tmp_path / "shared"), "0.2"]
    procs = []
    try:
        for _ in range(4):
            procs.append(
                await asyncio.create_subprocess_exec(
                    *command,
                    ",".join(NAMES),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env=env,
                )
            )
        workers = [hostshare_helpers.Worker(p) for p in procs]
        await asyncio.gather(*(w.wait_for(lambda e: e["ev"] == "ready") for w in workers))
        # The leader's first list pass is its baseline; rotate after it.
        await asyncio.wait_for(
            asyncio.wait(
                [asyncio.ensure_future(w.wait_for(lambda e: e["ev"] == "listed")) for w in workers],
                return_when=asyncio.FIRST_COMPLETED,
            ),
            hostshare_helpers.HANG,
        )
        since = len(emu.requests)
        marks = [len(w.events) for w in workers]
        version = emu.set_secret("charlie", "charlie-2")
        for w in workers:
            await w.wait_for(lambda e: e.get("name") == "charlie" and e["version"] == version)
        for w in workers:
            await w.send("quit")
        for p in procs:
            assert await asyncio.wait_for(p.wait(), hostshare_helpers.HANG) == 0
        for w in workers:
            await w._reader
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()

    roles = [w.role() for w in workers]
    assert roles.count("leader") == 1, roles
    lists, gets = vault_requests(emu, since)
    passes = [
        sum(1 for e in w.events[m:] if e["ev"] == "listed")
        for w, m in zip(workers, marks, strict=True)
    ]
    leader = roles.index("leader")
    assert lists == passes[leader] >= 1  # every list request of the host came from the leader
    assert [n for i, n in enumerate(passes) if i != leader] == [0, 0, 0]
    assert not [e for w in workers for e in w.events if e["ev"] == "fallback"]
    assert gets == {**dict.fromkeys(NAMES, 0), "charlie": 4}


@pytest.fixture
async def workers(
    keyvault_emulator: KeyVaultEmulator, tmp_path: Path
) -> AsyncIterator[list[Worker]]:
    emu = keyvault_emulator
    emu.seed({n: f"{n}-1" for n in NAMES}, created=datetime.now(UTC) - timedelta(hours=1))
    ctx = ssl.create_default_context(cafile=str(emu.ca_file))
    async with AsyncExitStack() as stack:
        made = []
        for _ in range(4):
            credential = emu.credential()
            stack.push_async_callback(credential.close)
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
            client = await stack.enter_async_context(
                SecretClient(
                    emu.vault_url,
                    credential,
                    verify_challenge_resource=False,
                    transport=AioHttpTransport(session=session, session_owner=True),
                )
            )
            share = await stack.enter_async_context(
                HostShare(tmp_path / "shared", f"{emu.vault_url}|Settings", interval=0.1)
            )
            worker = Worker(client, share)
            # Initial load after entering the share (so no notice from then on is missed).
            await asyncio.gather(*(worker.get(n) for n in NAMES))
            worker.listed = await worker.list_updated()
            made.append(worker)
        yield made


async def test_one_list_pass_per_host_and_gets_of_the_changed_secret_only(
    keyvault_emulator: KeyVaultEmulator, workers: list[Worker]
) -> None:
    """A rotation costs the host one list pass and one GET of the rotated secret per worker."""
    emu = keyvault_emulator
    assert [w.share.role for w in workers] == ["leader", "follower", "follower", "follower"]
    leader, followers = workers[0], workers[1:]
    for worker in workers:  # a quiet round: one list pass in all, no GETs
        await worker.tick()
    since = len(emu.requests)
    for worker in workers:
        await worker.tick()
    assert vault_requests(emu, since) == (1, dict.fromkeys(NAMES, 0))

    version = emu.set_secret("charlie", "charlie-2")
    since = len(emu.requests)
    for worker in workers:  # the leader ticks first here; order is not what matters:
        await worker.tick()  # a follower ticking earlier would just see it next interval
    lists, gets = vault_requests(emu, since)
    assert lists == 1
    assert gets == {**dict.fromkeys(NAMES, 0), "charlie": 4}
    for worker in workers:
        assert worker.values["charlie"] == "charlie-2"
        assert worker.versions["charlie"] == version
    notices = followers[0].share.poll_notices()
    assert notices == ()  # consumed; the notice carried the version, not the value
    assert "charlie-2" not in leader.share.notice_path.read_text()


async def test_leader_gone_a_follower_detects_with_the_vault(
    keyvault_emulator: KeyVaultEmulator, workers: list[Worker]
) -> None:
    """After the leader closes, the next follower to tick takes over and lists the vault."""
    emu = keyvault_emulator
    leader, followers = workers[0], workers[1:]
    await leader.share.aclose()
    emu.set_secret("echo", "echo-2")
    since = len(emu.requests)
    for worker in followers:
        await worker.tick()
    assert [w.share.role for w in followers] == ["leader", "follower", "follower"]
    lists, gets = vault_requests(emu, since)
    assert lists == 1
    assert gets == {**dict.fromkeys(NAMES, 0), "echo": 3}
    assert all(w.values["echo"] == "echo-2" for w in followers)
