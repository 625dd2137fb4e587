"""shared_dir safety in one process: unusable directories, untrustworthy notice files, cleanup.

Two ``HostShare`` objects in one process contend for the lock as two processes would (``flock``
locks belong to open file descriptions, and each share opens its own).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hostshare_helpers import listing, modes

from kvconfig._refresh._hostshare import MAX_NOTICES, HostShare

KEY = "https://myvault.vault.azure.net|app.Settings"


@dataclass(frozen=True)
class Change:
    name: str
    new_version: str | None = "v2"
    new_updated: datetime | None = None


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    return tmp_path / "shared"


@pytest.fixture
async def pair(shared: Path) -> AsyncIterator[tuple[HostShare, HostShare]]:
    """A leader and a follower on one directory."""
    async with (
        HostShare(shared, KEY, interval=0.1) as leader,
        HostShare(shared, KEY, interval=0.1) as follower,
    ):
        assert (leader.role, follower.role) == ("leader", "follower")
        yield leader, follower


async def test_directory_is_created_private(shared: Path) -> None:
    """A missing directory is created 0700, its files 0600; the first share leads."""
    async with HostShare(shared, KEY, interval=1) as share:
        assert share.role == "leader"
        assert modes(shared) == (0o700, {0o600})
        assert await share.poll() is None  # the leader detects changes itself


EXPECTED = {
    "mode": "is accessible to other users (mode 755",
    "owner": "is owned by uid 65534",
    "symlink": "the shared directory is a symlink",
    "file": "cannot be used (Not a directory)",
    "no-parent": "cannot be used (No such file or directory)",
}


@pytest.mark.parametrize("problem", sorted(EXPECTED))
async def test_unusable_directory_means_solo(
    problem: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not private, not ours, a symlink, not a directory, uncreatable: solo, with one WARNING."""
    target = tmp_path / "shared"
    if problem == "mode":
        target.mkdir(mode=0o755)
        target.chmod(0o755)
    elif problem == "owner":
        target.mkdir(mode=0o700)
        os.chown(target, 65534, 65534)
        if os.geteuid() != 0:
            pytest.skip("needs root to give the directory away")
    elif problem == "symlink":
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        target.symlink_to(real)
    elif problem == "file":
        target.write_text("")
    else:
        target = tmp_path / "missing" / "shared"
    before = fds()
    async with HostShare(target, KEY, interval=1) as share:
        assert share.role == "solo"
        assert await share.try_lead() is False
        assert await share.poll() is None
        assert await share.publish([Change("db-password")]) == 0
    assert fds() == before
    (message,) = warnings(caplog)
    assert "polls the vault on its own" in message and str(target) in message
    assert EXPECTED[problem] in message
    assert not listing(target)  # nothing written into an untrusted directory


async def test_follower_reports_published_names(pair: tuple[HostShare, HostShare]) -> None:
    """Names come back lower-cased, once each; an unchanged file is a cheap empty answer."""
    leader, follower = pair
    assert await follower.poll() == set()
    await leader.publish([Change("DB-Password"), Change("api-key", None)])
    assert await follower.poll() == {"db-password", "api-key"}
    assert await follower.poll() == set()
    await leader.publish(())  # heartbeat only
    assert await follower.poll() == set()
    assert await leader.publish([Change("api-key")]) == 3
    notices = follower.poll_notices()
    assert notices is not None
    assert [(n.seq, n.name, n.version) for n in notices] == [(3, "api-key", "v2")]
    await leader.publish([Change("port")])
    assert await follower.poll() == {"port"}


async def test_notice_file_holds_no_value(pair: tuple[HostShare, HostShare]) -> None:
    """The notice file carries names, versions and times only."""
    leader, _ = pair
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await leader.publish([Change("db-password", "abc123", when)])
    data = json.loads(leader.notice_path.read_bytes())
    assert data["notices"] == [
        {"seq": 1, "name": "db-password", "version": "abc123", "updated": when.isoformat()}
    ]
    assert set(data) == {"format", "key", "epoch", "pid", "seq", "heartbeat", "notices"}


def rewrite(path: Path, **changes: object) -> None:
    data = json.loads(path.read_bytes())
    data.update(changes)
    tmp = path.with_suffix(".test")
    tmp.write_text(json.dumps(data))
    tmp.chmod(0o600)
    tmp.replace(path)


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        ("garbage", "corrupt (not JSON)"),
        ("bad-notice", "corrupt (bad notice)"),
        ("other-key", "another key"),
        ("mode", "accessible to other users"),
        ("symlink", "symlink"),
        ("fifo", "not a regular file"),
        ("stale", "heartbeat is stale"),
        ("future", "heartbeat is stale"),
        ("too-large", "too large"),
        ("new-epoch", "new notice log"),
        ("deleted", "no change notice"),
    ],
)
async def test_untrustworthy_notices_fall_back_then_recover(
    spoil: str,
    reason: str,
    pair: tuple[HostShare, HostShare],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each bad notice file: poll() is None with one WARNING (no value); the next publish heals."""
    leader, follower = pair
    follower._entered -= 3600  # past the start-up grace for a missing file
    await leader.publish([Change("a")])
    assert await follower.poll() == {"a"}
    path = leader.notice_path
    if spoil == "garbage":
        path.write_bytes(b"\x00{not json")
    elif spoil == "bad-notice":
        rewrite(path, notices=[{"seq": 1, "name": "../etc/passwd", "version": None}])
    elif spoil == "other-key":
        rewrite(path, key="another")
    elif spoil == "mode":
        path.chmod(0o644)
    elif spoil == "symlink":
        decoy = tmp_path / "decoy.json"
        decoy.write_bytes(path.read_bytes())
        decoy.chmod(0o600)
        path.unlink()
        path.symlink_to(decoy)
    elif spoil == "fifo":
        path.unlink()
        os.mkfifo(path, 0o600)
    elif spoil == "stale":
        rewrite(path, heartbeat=1.0)
    elif spoil == "future":
        rewrite(path, heartbeat=4e9)
    elif spoil == "too-large":
        path.write_bytes(b" " * (1 << 20))
    elif spoil == "new-epoch":
        rewrite(path, epoch="0123456789abcdef")
    else:
        path.unlink()
    caplog.clear()
    assert await follower.poll() is None
    if spoil == "new-epoch":  # resynchronised: the follower now follows the new log
        assert await follower.poll() == set()
    else:
        assert await follower.poll() is None
    (message,) = warnings(caplog)  # once per episode, not once per poll
    assert reason in message and str(path.parent) in message
    if spoil == "new-epoch":
        return
    if spoil in ("symlink", "fifo"):
        path.unlink()
    await leader.publish([Change("b")])
    names = await follower.poll()
    assert names is not None and "b" in names


async def test_follower_behind_the_bounded_log_resyncs(pair: tuple[HostShare, HostShare]) -> None:
    """More notices than the file keeps between two polls: None once, then in step again."""
    leader, follower = pair
    await leader.publish([Change(f"s-{i}") for i in range(MAX_NOTICES + 10)])
    assert await follower.poll() is None
    await leader.publish([Change("next")])
    assert await follower.poll() == {"next"}


async def test_leader_close_hands_over(shared: Path) -> None:
    """A leader's aclose releases the lock; a follower's try_lead then continues its log."""
    leader = HostShare(shared, KEY, interval=0.1)
    async with leader, HostShare(shared, KEY, interval=0.1) as follower:
        await leader.publish([Change("a"), Change("b")])
        assert await follower.try_lead() is False
        await leader.aclose()
        assert leader.role == "solo"
        await leader.aclose()  # idempotent
        assert await follower.try_lead() is True
        assert await follower.publish([Change("c")]) == 3


async def test_replaced_lock_file_makes_the_leader_step_down(shared: Path) -> None:
    """A cleaner removed the lock file and a newcomer locked a new one: the old leader yields."""
    async with HostShare(shared, KEY, interval=0.1) as old:
        (shared / old.lock_path.name).unlink()
        async with HostShare(shared, KEY, interval=0.1) as newcomer:
            assert newcomer.role == "leader"
            assert await old.publish([Change("a")]) == 0
            assert old.role == "follower"
            assert await old.try_lead() is False


async def test_keys_separate_shares(shared: Path) -> None:
    """Two keys in one directory elect two leaders and see only their own notices."""
    async with (
        HostShare(shared, "vault-a", interval=0.1) as a1,
        HostShare(shared, "vault-b", interval=0.1) as b1,
        HostShare(shared, "vault-a", interval=0.1) as a2,
    ):
        assert (a1.role, b1.role, a2.role) == ("leader", "leader", "follower")
        await b1.publish([Change("only-b")])
        assert await a2.poll() == set()


async def test_no_descriptor_or_temp_file_leaks(shared: Path) -> None:
    """Open, elect, publish, poll and close many times: same descriptors, two files."""
    before = fds()
    for i in range(20):
        async with (
            HostShare(shared, KEY, interval=0.1) as leader,
            HostShare(shared, KEY, interval=0.1) as follower,
        ):
            await leader.publish([Change(f"s-{i}")])
            await follower.poll()
    assert fds() == before
    assert len(listing(shared)) == 2


async def test_repr_shows_no_more_than_path_key_and_role(shared: Path) -> None:
    async with HostShare(shared, KEY, interval=1) as share:
        assert repr(share) == f"HostShare(path={str(shared)!r}, key={KEY!r}, role='leader')"
