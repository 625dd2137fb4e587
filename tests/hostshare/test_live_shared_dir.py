"""``watch(..., shared_dir=...)`` end to end: real worker processes (``live_worker.py``) running
``LiveSettings`` against the emulator with the real SDK. One process lists the vault for the
host; a rotation costs one GET of the rotated secret per process; ``kill -9`` of that process
hands the job to another, and every survivor still sees every rotation."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hostshare_helpers import HANG, Worker
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import VaultPermissionError, VaultUnavailableError
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory

NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
LIVE_WORKER = Path(__file__).with_name("live_worker.py")
INTERVAL = 0.3

Start = Callable[[int], Awaitable[list[Worker]]]


@pytest.fixture
async def start_live(keyvault_emulator: KeyVaultEmulator, tmp_path: Path) -> AsyncIterator[Start]:
    emu = keyvault_emulator
    emu.seed({n: f"{n}-1" for n in NAMES}, created=datetime.now(UTC) - timedelta(hours=1))
    env = {**os.environ, **emu.environment(), "PYTHONUNBUFFERED": "1"}
    started: list[Worker] = []

    async def start(n: int) -> list[Worker]:
        workers = []
        for _ in range(n):  # one by one: the first to enter leads
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-W",
                "error",
                str(LIVE_WORKER),
                str(tmp_path / "shared"),
                str(INTERVAL),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            worker = Worker(proc)
            started.append(worker)
            workers.append(worker)
            await worker.wait_for(lambda e: e["ev"] == "ready")
        return workers

    yield start
    for worker in started:
        if worker.proc.returncode is None:
            worker.proc.kill()
        await worker.proc.wait()
        await worker._reader
        if worker.proc.stdin is not None:
            worker.proc.stdin.close()


async def status(worker: Worker) -> dict[str, Any]:
    since = len(worker.events)
    await worker.send("status")
    return await worker.wait_for(lambda e: e["ev"] == "status", since=since)


async def sees(worker: Worker, name: str, value: str) -> None:
    await worker.wait_for(lambda e: e["ev"] == "changed" and e["values"][name] == value)


def vault_requests(emu: KeyVaultEmulator, since: int) -> tuple[int, dict[str, int]]:
    """List requests and value GETs per secret, authenticated ones only, from ``since``."""
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


def rotate(emu: KeyVaultEmulator, name: str) -> None:
    """A new version ``<name>-2``, its ``updated`` time a while ago: Key Vault's whole-second
    times then prove it at once, so the leader reads it exactly once (no settling re-reads)."""
    emu.set_secret(name, f"{name}-2", created=datetime.now(UTC) - timedelta(minutes=30))


async def until_listed(emu: KeyVaultEmulator, since: int, passes: int) -> None:
    async with asyncio.timeout(HANG):
        while vault_requests(emu, since)[0] < passes:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_one_process_lists_for_the_host_and_each_gets_only_the_rotated_secret(
    keyvault_emulator: KeyVaultEmulator, start_live: Start
) -> None:
    emu = keyvault_emulator
    workers = await start_live(4)
    assert [w.role() for w in workers] == ["leader", "follower", "follower", "follower"]
    await until_listed(emu, 0, 2)  # the leader's baseline pass is behind us
    before = [await status(w) for w in workers]
    since = len(emu.requests)  # the emulator serves on this loop: counts are taken atomically
    rotate(emu, "charlie")
    for worker in workers:
        await sees(worker, "charlie", "charlie-2")
    async with asyncio.timeout(HANG):  # a few quiet passes of the leader after the rotation too
        while (await status(workers[0]))["lists"] - before[0]["lists"] < 3:  # noqa: ASYNC110
            await asyncio.sleep(INTERVAL / 2)
    after = [await status(workers[0])]
    lists, gets = vault_requests(emu, since)  # right after the leader's own count
    after += [await status(w) for w in workers[1:]]
    own_lists = [a["lists"] - b["lists"] for a, b in zip(after, before, strict=True)]
    own_gets = [a["gets"] - b["gets"] for a, b in zip(after, before, strict=True)]
    # Every list request came from the leader; followers only GET what the notices named.
    assert own_lists[1:] == [0, 0, 0] and own_lists[0] >= 3
    assert own_gets[1:] == [1, 1, 1]
    assert lists <= own_lists[0] + 1  # + a pass in flight when its status was taken
    assert gets == {**dict.fromkeys(NAMES, 0), "charlie": 4}  # one GET per process
    for worker in workers:
        await worker.send("quit")
        await worker.wait_for(lambda e: e["ev"] == "closed")
        assert await asyncio.wait_for(worker.proc.wait(), HANG) == 0


async def test_kill_9_of_the_leader_hands_over_and_no_rotation_is_missed(
    keyvault_emulator: KeyVaultEmulator, start_live: Start
) -> None:
    emu = keyvault_emulator
    workers = await start_live(3)
    leader, followers = workers[0], workers[1:]
    assert leader.role() == "leader"
    await until_listed(emu, 0, 1)
    rotate(emu, "alpha")
    for worker in workers:
        await sees(worker, "alpha", "alpha-2")
    await leader.kill9()
    marks = [len(w.events) for w in followers]
    # The kernel dropped the dead leader's lock: a follower takes over at its next interval.
    took_over = await asyncio.wait_for(
        asyncio.wait(
            [
                asyncio.ensure_future(w.wait_for(lambda e: e.get("role") == "leader", since=m))
                for w, m in zip(followers, marks, strict=True)
            ],
            return_when=asyncio.FIRST_COMPLETED,
        ),
        HANG,
    )
    for pending in took_over[1]:
        pending.cancel()
    assert len(took_over[0]) == 1
    since = len(emu.requests)
    before = [await status(w) for w in followers]
    rotate(emu, "echo")
    for worker in followers:
        await sees(worker, "echo", "echo-2")
    after = [await status(w) for w in followers]
    assert sorted(a["role"] for a in after) == ["follower", "leader"]
    lists, gets = vault_requests(emu, since)
    assert lists >= 1
    assert gets == {**dict.fromkeys(NAMES, 0), "echo": 2}  # one GET per surviving process
    for a, b in zip(after, before, strict=True):
        if a["role"] == "follower":  # the survivor that still follows: one targeted GET, no list
            assert (a["lists"] - b["lists"], a["gets"] - b["gets"]) == (0, 1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVCONFIG_LIVE_SHARE_TEST_")

    alpha: str
    bravo: str


async def test_unsafe_directory_or_corrupt_notices_fall_back_to_own_polling(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, tmp_path: Path
) -> None:
    """A directory others can read makes the watcher solo; a corrupt notice file makes a
    follower detect on its own: both still see every rotation."""
    emu = keyvault_emulator
    emu.seed({"alpha": "a-1", "bravo": "b-1"}, created=datetime.now(UTC) - timedelta(hours=1))
    public = tmp_path / "public"
    public.mkdir(mode=0o755)
    public.chmod(0o755)
    shared = tmp_path / "shared"
    async with (
        make_vault() as vault,
        vault.watch(Settings, interval=0.1, shared_dir=public) as solo,
        vault.watch(Settings, interval=0.1, shared_dir=shared) as leader,
        vault.watch(Settings, interval=0.1, shared_dir=shared) as follower,
    ):
        assert solo.health.shared_role == "solo"
        assert (leader.health.shared_role, follower.health.shared_role) == ("leader", "follower")
        share = leader._share
        assert share is not None
        await leader.aclose()  # the refresher stops; its notice file is left behind...
        share.notice_path.write_text("{not json")  # ...and corrupted
        rotate(emu, "bravo")
        async with asyncio.timeout(HANG):
            while follower.current.bravo != "bravo-2" or solo.current.bravo != "bravo-2":  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert follower.health.shared_role in ("leader", "follower")


async def test_a_follower_whose_targeted_get_failed_detects_on_its_own_next_time(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, tmp_path: Path
) -> None:
    """The names a poll returned are consumed: after a failed re-read the follower runs its own
    detection pass (one list pass) rather than trusting notices it already read. Ticks are
    driven by hand (the background interval is an hour)."""
    emu = keyvault_emulator
    emu.seed({"alpha": "a-1", "bravo": "b-1"}, created=datetime.now(UTC) - timedelta(hours=1))
    shared = tmp_path / "shared"
    async with (
        make_vault() as vault,
        vault.watch(Settings, interval=3600, shared_dir=shared) as leader,
        vault.watch(Settings, interval=3600, shared_dir=shared) as follower,
    ):
        assert (leader.health.shared_role, follower.health.shared_role) == ("leader", "follower")
        rotate(emu, "alpha")
        await leader._tick()  # detects and publishes the notice
        assert leader.current.alpha == "alpha-2"
        emu.faults.fail_next(1, status=403)  # the follower's GET of alpha is refused
        with pytest.raises(VaultPermissionError):
            await follower._tick()
        assert follower.current.alpha == "a-1" and follower.health.consecutive_failures == 1
        since = len(emu.requests)
        await follower._tick()  # not another poll of the share: its own detection pass
        lists, _ = vault_requests(emu, since)
        assert lists == 1 and follower.current.alpha == "alpha-2"
        since = len(emu.requests)
        await leader._tick()
        await follower._tick()  # back to following: nothing changed, no request of its own
        assert vault_requests(emu, since)[0] == 1


async def test_a_follower_is_no_fresher_than_the_refresher(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, tmp_path: Path
) -> None:
    """While the refresher's passes fail its heartbeat stops, though it is far from stale yet:
    a follower still trusting it reports the refresher's last success as its own, so
    ``health.fresh`` turns false after ``max_staleness`` on every process, not only on the
    refresher. Ticks are driven by hand (the background interval is an hour)."""
    emu = keyvault_emulator
    emu.seed({"alpha": "a-1", "bravo": "b-1"}, created=datetime.now(UTC) - timedelta(hours=1))
    shared = tmp_path / "shared"
    options: dict[str, Any] = {"interval": 3600, "max_staleness": 0.05, "shared_dir": shared}
    async with (
        make_vault(startup_timeout=0.3) as vault,
        vault.watch(Settings, **options) as leader,
        vault.watch(Settings, **options) as follower,
    ):
        await leader._tick()
        await follower._tick()
        emu.faults.outage(True)
        with pytest.raises(VaultUnavailableError):
            await leader._tick()  # a failed pass: no heartbeat (0.3 s of retries)
        since = len(emu.requests)
        await follower._tick()  # the share still vouches: no request of its own
        assert len(emu.requests) == since
        assert (leader.health.fresh, follower.health.fresh) == (False, False)
        assert follower.health.serving and follower.health.consecutive_failures == 0
        emu.faults.outage(False)
        await leader._tick()
        await follower._tick()
        assert (leader.health.fresh, follower.health.fresh) == (True, True)
