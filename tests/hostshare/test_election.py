"""shared_dir across real processes: one leader, notices reach every follower, kill -9 takeover."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from hostshare_helpers import HANG, StartWorkers, Worker, listing, modes


async def roles(workers: list[Worker]) -> list[str]:
    return list(await asyncio.gather(*(w.status() for w in workers)))


async def leader_of(workers: list[Worker]) -> tuple[Worker, list[Worker]]:
    current = await roles(workers)
    assert current.count("leader") == 1, current
    assert current.count("follower") == len(workers) - 1, current
    leader = workers[current.index("leader")]
    return leader, [w for w in workers if w is not leader]


async def test_exactly_one_leader_among_four(start_workers: StartWorkers, tmp_path: Path) -> None:
    """Four workers started at once elect one leader, and it stays the only one."""
    workers = await start_workers(4)
    leader, _ = await leader_of(workers)
    for _ in range(3):  # several intervals later: still one, the same one
        await asyncio.sleep(0.15)
        again, _ = await leader_of(workers)
        assert again is leader
    assert modes(tmp_path / "shared") == (0o700, {0o600})


async def test_followers_see_every_notice(start_workers: StartWorkers) -> None:
    """Every name the leader publishes reaches every follower, in bursts and one by one."""
    workers = await start_workers(4)
    leader, followers = await leader_of(workers)
    published: set[str] = set()
    for i in range(12):
        names = [f"secret-{i}-{j}" for j in range(1 + i % 3)]
        published.update(names)
        await leader.send(f"publish {','.join(names)} v{i}")
        if i % 4 == 0:  # let some notices go out alone, others pile up in one file write
            await leader.wait_for(lambda e: e["ev"] == "published")
            await asyncio.sleep(0.15)
    seqs = [e["seq"] for e in leader.events if e["ev"] == "published"]
    await leader.wait_for(lambda e: e["ev"] == "published" and e["seq"] == len(published))
    for follower in followers:
        await follower.wait_for(lambda e, f=follower: published <= f.seen())
        assert follower.seen() == published
        assert not [e for e in follower.events if e["ev"] == "fallback"]
    assert seqs == sorted(seqs)


async def test_leader_kill9_hands_over_to_one_follower(start_workers: StartWorkers) -> None:
    """kill -9 of the leader: one follower takes over and its notices reach the others."""
    workers = await start_workers(4)
    leader, followers = await leader_of(workers)
    await leader.send("publish before-kill v1")
    for follower in followers:
        await follower.wait_for(lambda e: e["ev"] == "seen" and "before-kill" in e["names"])

    await leader.kill9()
    # Each follower tries the lock every interval; one of them must win (bounded: no hang).
    await asyncio.wait_for(
        asyncio.wait(
            [
                asyncio.ensure_future(f.wait_for(lambda e: e.get("role") == "leader"))
                for f in followers
            ],
            return_when=asyncio.FIRST_COMPLETED,
        ),
        30,
    )
    new_leader, survivors = await leader_of(followers)
    await new_leader.send("publish after-kill v2")
    event = await new_leader.wait_for(lambda e: e["ev"] == "published")
    assert event["seq"] == 2  # the new leader continued the dead one's log
    for follower in survivors:
        await follower.wait_for(lambda e: e["ev"] == "seen" and "after-kill" in e["names"])


async def test_workers_leave_nothing_behind(start_workers: StartWorkers, tmp_path: Path) -> None:
    """Clean exits close every descriptor; only the lock and notice files stay; all reaped."""
    workers = await start_workers(3)
    leader, followers = await leader_of(workers)
    await leader.send("publish x v1")
    await leader.wait_for(lambda e: e["ev"] == "published")
    for worker in [*followers, leader]:
        closed = await worker.quit()
        assert closed["fds_after"] == closed["fds_before"], closed
        assert worker.proc.returncode == 0
    names = listing(tmp_path / "shared")
    assert len(names) == 2 and names[0].endswith(".json") and names[1].endswith(".lock"), names
    # No lock is left held: a new process leads at once.
    (again,) = await start_workers(1)
    assert again.role() == "leader" or await again.status() == "leader"


FORK_SCRIPT = """
import asyncio, fcntl, os, signal, sys, time
from kvconfig._refresh._hostshare import HostShare

async def main(path, result):
    async with HostShare(path, "k", interval=0.1) as share:
        assert share.role == "leader"
        r, w = os.pipe()
        if os.fork() == 0:  # the child keeps running after its parent is killed
            os.close(w)
            ok = share.role == "solo"
            os.read(r, 1)  # EOF once the parent is gone
            fd = os.open(share.lock_path, os.O_RDWR)
            verdict = "still-held"
            for _ in range(200):  # the kernel releases a dead process's lock a moment after EOF
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    time.sleep(0.05)
                    continue
                verdict = "free" if ok else "not-solo"
                break
            with open(result + ".tmp", "w") as f:
                f.write(verdict)
            os.rename(result + ".tmp", result)
            os._exit(0)
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def read_result(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


async def test_forked_child_does_not_keep_a_dead_leaders_lock(tmp_path: Path) -> None:
    """fork() without exec: the child drops its copy of the lock, so the parent's death frees it."""
    result = tmp_path / "result"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-W", "error", "-c", FORK_SCRIPT, str(tmp_path / "shared"), str(result)
    )
    assert await asyncio.wait_for(proc.wait(), HANG) == -signal.SIGKILL
    verdict = None
    async with asyncio.timeout(HANG):  # the orphaned child reports through a file
        while verdict is None:
            await asyncio.sleep(0.05)
            verdict = read_result(result)
    assert verdict == "free"
