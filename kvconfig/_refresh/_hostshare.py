"""One refresher per host: worker processes that share a directory share one change detection.

Strictly private; ``watch(..., shared_dir=PATH)`` is the public face (wired by ``LiveSettings``).

Mechanism
---------
Every process that watches the same settings with the same ``shared_dir`` opens a
:class:`HostShare` on it with the same ``key`` (e.g. vault URL + settings class): the key is
hashed into two file names, so several vaults or settings classes can share one directory.

- **Election**: ``kvconfig-<hash>.lock`` is locked with ``fcntl.flock(LOCK_EX | LOCK_NB)``. The
  holder is the *leader* (the host's one refresher); everyone else is a *follower* and tries the
  lock again on each :meth:`HostShare.try_lead` (call it every interval). The kernel drops the
  lock when the holder's last descriptor closes, which includes ``kill -9``, so a follower takes
  over at its next try: within one interval. The lock file is never deleted (deleting it would
  let two processes lock two different inodes); after locking, its inode is compared with the
  path's to catch a file replaced under us.
- **Notices**: the leader runs change detection against the vault and publishes
  (:meth:`~HostShare.publish`) what changed: secret name, new version and ``updated`` time (never
  a value), each with a sequence number that only grows. ``kvconfig-<hash>.json`` holds a bounded
  log of the latest notices plus the leader's heartbeat and the log's *epoch* (a random id that
  survives takeovers: a new leader continues the log it finds). Each write is atomic: temp file
  (0600, ``O_EXCL``), ``fsync``, ``rename``. The leader publishes after *every* detection pass,
  even an empty one, so the heartbeat shows it is alive.
- **Followers**: :meth:`~HostShare.poll` ``lstat``\\ s the notice file; if inode, size, mtime,
  mode and owner are unchanged it only checks the heartbeat's age, otherwise it reads and
  validates the file and returns the (lower-cased) names of secrets with notices newer than the
  last one it saw. No vault request. ``None`` means "I cannot vouch for what changed: run your own
  detection this time"; it is returned (with one WARNING per episode, naming the path and the
  reason, never a value) for: no notice yet, a stale heartbeat (older than ``stale_after``), a
  corrupt, oversized, symlinked, foreign or non-private notice file, a new epoch, or a gap (the
  follower fell behind the bounded log). Returning ``None`` resynchronises: the next poll reports
  notices after the ones present now.

Safety: the directory is created 0700 if missing. A directory that is a symlink, not ours
(owner other than the effective uid) or accessible to group/others, or that cannot be opened,
makes the share *solo*: :attr:`~HostShare.role` is ``"solo"``, :meth:`~HostShare.try_lead` is
``False``, :meth:`~HostShare.poll` returns ``None`` and :meth:`~HostShare.publish` does nothing,
so the process polls the vault on its own as without ``shared_dir``. Files are opened relative
to a descriptor of the checked directory with ``O_NOFOLLOW``, created 0600, and read only when
they are regular files owned by us and private. A process that ``fork()``\\ s without ``exec``
closes its copy of the lock descriptor in the child (which becomes solo), so a forked child
never keeps a dead parent's leadership alive.

Blocking I/O: the files are a few KiB on a local filesystem; ``lstat``, ``open``, a small
``read`` and a non-blocking ``flock`` take microseconds and run on the event loop. The leader's
write runs in a worker thread (:func:`asyncio.to_thread`) because ``fsync`` can wait for the
disk for milliseconds or more. The directory itself is not ``fsync``\\ ed: the notices only
matter to processes that are running, and none survives a reboot.

Contract (how ``LiveSettings`` drives it)::

    async with HostShare(shared_dir, key, interval=interval) as share:  # before the first load
        ...initial load...
        while running:                                     # every interval
            if share.role == "follower":
                await share.try_lead()
            if share.role == "follower":
                names = await share.poll()                 # set[str] | None
                if names is None: own detection pass
                elif names: GET only those secrets, then validate/publish as any refresh
            else:                                          # leader or solo
                own detection pass
                if share.role == "leader": await share.publish(changes)   # even when empty

Enter the share before the initial load: notices published from then on are reported, so a
rotation between the load and the first poll is not missed (a duplicate costs one GET of a
version already held). ``changes`` are objects with ``name``, ``new_version`` and
``new_updated`` (``SecretChange`` fits); a deleted or disabled secret has ``new_version=None``.
Names returned by :meth:`~HostShare.poll` are consumed: if the targeted GETs fail, run an own
detection pass at the next interval (or keep the names pending) rather than poll again. Build
``key`` from a normalised vault URL (scheme, host, no trailing slash) and the settings class's
qualified name, so every worker of the service derives the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import time
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self

__all__ = ["ChangeLike", "HostShare", "Notice", "Role"]

logger = logging.getLogger("kvconfig")

Role = Literal["leader", "follower", "solo"]

FORMAT = 1
MAX_NOTICES = 512  # notices kept in the file; a follower further behind resynchronises
MAX_FILE_BYTES = 256 * 1024
_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_VERSION = re.compile(r"[0-9A-Za-z-]{1,64}")


class ChangeLike(Protocol):
    """What :meth:`HostShare.publish` needs from a change (``SecretChange`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def new_version(self) -> str | None: ...
    @property
    def new_updated(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Notice:
    """One published change: which secret, its new version and ``updated`` time. No value.

    ``version`` is ``None`` when the secret was deleted or disabled.
    """

    seq: int
    name: str
    version: str | None
    updated: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "name": self.name,
            "version": self.version,
            "updated": None if self.updated is None else self.updated.isoformat(),
        }


class _Invalid(Exception):
    """A notice file that cannot be trusted; the message is the reason (never file content)."""


_live: weakref.WeakSet[HostShare] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for share in list(_live):
        share._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class HostShare:
    """One process's seat in a per-host refresher election (see the module docstring).

    Args:
        path: The shared directory (created 0700 if missing).
        key: Separates independent shares in one directory (e.g. vault URL + settings class).
        interval: The refresh interval in seconds; sets the default ``stale_after``.
        stale_after: Seconds after which a leader's heartbeat is too old to trust
            (default ``3 * interval + 5``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: str,
        *,
        interval: float,
        stale_after: float | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.path = Path(path)
        self.key = key
        self.interval = interval
        self.stale_after = 3 * interval + 5 if stale_after is None else stale_after
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        self._lock_name = f"kvconfig-{digest}.lock"
        self._notice_name = f"kvconfig-{digest}.json"
        self._role: Role = "solo"
        self._dir_fd: int | None = None
        self._lock_fd: int | None = None
        self._closed = False
        # leader state
        self._epoch = ""
        self._seq = 0
        self._log: deque[Notice] = deque(maxlen=MAX_NOTICES)
        self._write_lock = asyncio.Lock()
        # follower state
        self._seen_epoch: str | None = None
        self._seen_seq = 0
        self._stat_sig: tuple[int, ...] | None = None
        self._heartbeat = 0.0
        self._warned: str | None = None
        self._entered = 0.0

    def __repr__(self) -> str:
        return f"HostShare(path={str(self.path)!r}, key={self.key!r}, role={self._role!r})"

    @property
    def role(self) -> Role:
        """``"leader"``, ``"follower"``, or ``"solo"`` (directory unusable, or closed)."""
        return self._role

    @property
    def heartbeat(self) -> float | None:
        """When (``time.time()``) the refresher's last pass that a :meth:`poll` read succeeded;
        ``None`` before one was read. A follower's view of the vault is no fresher than that."""
        return self._heartbeat or None

    @property
    def notice_path(self) -> Path:
        """The notice file (for diagnostics and tests)."""
        return self.path / self._notice_name

    @property
    def lock_path(self) -> Path:
        """The lock file (for diagnostics and tests)."""
        return self.path / self._lock_name

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._closed or self._dir_fd is not None:
            raise RuntimeError("a HostShare can be entered once")
        self._entered = time.time()
        self._open()
        _live.add(self)
        if self._role == "follower":
            # Baseline: notices published from now on are reported by poll().
            with contextlib.suppress(_Invalid, OSError):
                data = self._read()
                if data is not None:  # even if stale: a new leader continues this log
                    self._adopt(data)
            await self.try_lead()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the lock and the directory descriptor. Idempotent."""
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:  # let a write in flight finish with the lock still held
            self._close_fds()
        self._role = "solo"
        _live.discard(self)

    def _close_fds(self) -> None:
        for fd in (self._lock_fd, self._dir_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._lock_fd = self._dir_fd = None

    def _forget_after_fork(self) -> None:
        # Closing (never LOCK_UN, which would release the parent's lock) the child's copies.
        self._close_fds()
        self._role = "solo"
        self._closed = True

    def _open(self) -> None:
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.path, 0o700)
            dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            # O_NOFOLLOW | O_DIRECTORY on a symlink fails with ELOOP or ENOTDIR (Linux).
            reason = f"cannot be used ({exc.strerror})"
            with contextlib.suppress(OSError):
                if exc.errno == errno.ELOOP or stat.S_ISLNK(os.lstat(self.path).st_mode):
                    reason = "is a symlink"
            self._solo(f"the shared directory {reason}")
            return
        problem = _not_private(os.fstat(dir_fd), directory=True)
        if problem is not None:
            os.close(dir_fd)
            self._solo(f"the shared directory {problem}")
            return
        self._dir_fd = dir_fd
        try:
            lock_fd = os.open(
                self._lock_name,
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
        except OSError as exc:
            self._close_fds()
            self._solo(f"the lock file cannot be opened ({exc.strerror})")
            return
        problem = _not_private(os.fstat(lock_fd), directory=False)
        if problem is not None:
            os.close(lock_fd)
            self._close_fds()
            self._solo(f"the lock file {problem}")
            return
        self._lock_fd = lock_fd
        self._role = "follower"

    def _solo(self, reason: str) -> None:
        self._role = "solo"
        logger.warning(
            "shared_dir %s not used: %s; this process polls the vault on its own",
            self.path,
            reason,
        )

    # -- election ------------------------------------------------------------------------------

    async def try_lead(self) -> bool:
        """Try (without waiting) to become the host's refresher; ``True`` if this process is it.

        A new leader continues the notice log it finds (same epoch, next sequence number) and
        publishes a heartbeat at once.
        """
        if self._role == "leader":
            return True
        if self._role != "follower" or self._lock_fd is None or self._dir_fd is None:
            return False
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            logger.warning("shared_dir %s: locking failed (%s)", self.path, exc.strerror)
            return False
        if not self._lock_is_ours():
            # The lock file was replaced: this lock guards nothing. Reopen for the next try.
            self._reopen_lock()
            return False
        self._role = "leader"
        self._take_over()
        logger.info("shared_dir %s: this process (pid %d) is the refresher", self.path, os.getpid())
        await self.publish(())
        return True

    def _take_over(self) -> None:
        try:
            data = self._read()
        except (_Invalid, OSError):
            data = None
        if data is not None:
            self._epoch = data["epoch"]
            self._seq = data["seq"]
            self._log = deque(data["notices"], maxlen=MAX_NOTICES)
        else:
            self._epoch = secrets.token_hex(8)
            self._seq = 0
            self._log = deque(maxlen=MAX_NOTICES)

    # -- leader --------------------------------------------------------------------------------

    async def publish(self, changes: Iterable[ChangeLike]) -> int:
        """Append notices for ``changes`` and rewrite the notice file (the heartbeat).

        Call after every detection pass, with an empty iterable when nothing changed. Returns
        the last sequence number written (0 when not the leader). A failed write is logged; the
        notices stay in the log and go out with the next publish.
        """
        if self._role != "leader":
            return 0
        if not self._still_locked():
            return 0
        for change in changes:
            self._seq += 1
            self._log.append(Notice(self._seq, change.name, change.new_version, change.new_updated))
        body = json.dumps(
            {
                "format": FORMAT,
                "key": self.key,
                "epoch": self._epoch,
                "pid": os.getpid(),
                "seq": self._seq,
                "heartbeat": time.time(),
                "notices": [n.to_json() for n in self._log],
            },
            separators=(",", ":"),
        ).encode()
        async with self._write_lock:
            dir_fd = self._dir_fd
            if dir_fd is None or self._role != "leader":
                return 0
            try:
                await asyncio.to_thread(self._write, dir_fd, body)
            except OSError as exc:
                logger.warning(
                    "shared_dir %s: writing change notices failed (%s); followers will poll on "
                    "their own once the notices go stale",
                    self.path,
                    exc.strerror,
                )
        return self._seq

    def _still_locked(self) -> bool:
        """Whether our lock is on the file at the lock path; step down if it was replaced.

        The lock file is never deleted by kvconfig, but a cleaner (``systemd-tmpfiles``,
        ``tmpwatch``) may remove it; a process starting after that would lock a new file.
        """
        if self._lock_is_ours():
            return True
        logger.warning(
            "shared_dir %s: the lock file was removed or replaced; this process stops being the "
            "refresher",
            self.path,
        )
        self._reopen_lock()
        self._role = "follower"
        return False

    def _lock_is_ours(self) -> bool:
        if self._lock_fd is None or self._dir_fd is None:
            return False
        try:
            at_path = os.stat(self._lock_name, dir_fd=self._dir_fd, follow_symlinks=False)
            held = os.fstat(self._lock_fd)
        except OSError:
            return False
        return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)

    def _reopen_lock(self) -> None:
        if self._dir_fd is None:
            return
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        with contextlib.suppress(OSError):
            self._lock_fd = os.open(
                self._lock_name,
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=self._dir_fd,
            )

    def _write(self, dir_fd: int, body: bytes) -> None:
        tmp = f".{self._notice_name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
        try:
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._notice_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise

    # -- follower ------------------------------------------------------------------------------

    async def poll(self) -> set[str] | None:
        """Lower-cased names of secrets with notices since the last poll; ``None``: poll yourself.

        Makes no vault request. ``None`` for the leader and a solo share too (they detect
        changes themselves), and whenever the notices cannot be trusted (see the module
        docstring).
        """
        notices = self.poll_notices()
        if notices is None:
            return None
        return {n.name.lower() for n in notices}

    def poll_notices(self) -> tuple[Notice, ...] | None:
        """Like :meth:`poll`, with the notices themselves (versions, times)."""
        if self._role != "follower" or self._dir_fd is None:
            return None
        try:
            st = os.stat(self._notice_name, dir_fd=self._dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return self._no_notice_yet()
        except OSError as exc:
            return self._fallback(f"the notice file cannot be read ({exc.strerror})")
        sig = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode, st.st_uid)
        if sig == self._stat_sig:
            if not self._heartbeat_fresh(self._heartbeat):
                return self._fallback("the refresher's heartbeat is stale")
            self._recovered()
            return ()
        try:
            data = self._read()
        except _Invalid as exc:
            self._stat_sig = None
            return self._fallback(str(exc))
        except OSError as exc:
            self._stat_sig = None
            return self._fallback(f"the notice file cannot be read ({exc.strerror})")
        if data is None:
            return self._no_notice_yet()
        self._stat_sig = sig
        self._heartbeat = data["heartbeat"]
        if not self._fresh(data):
            return self._fallback("the refresher's heartbeat is stale")
        notices: list[Notice] = data["notices"]
        if self._seen_epoch is None:
            if (notices and notices[0].seq != 1) or (not notices and data["seq"] != 0):
                self._adopt(data)
                return self._fallback("first look at a notice log that started before us")
            # The whole log since its start: report it all (a duplicate costs one GET).
            self._adopt(data)
            self._recovered()
            return tuple(notices)
        if data["epoch"] != self._seen_epoch or data["seq"] < self._seen_seq:
            self._adopt(data)
            return self._fallback("a new notice log was started")
        first = notices[0].seq if notices else data["seq"] + 1
        if first > self._seen_seq + 1:
            self._adopt(data)
            return self._fallback("this process fell behind the notice log")
        new = tuple(n for n in notices if n.seq > self._seen_seq)
        self._adopt(data)
        self._recovered()
        return new

    def _no_notice_yet(self) -> tuple[Notice, ...] | None:
        # Right after start-up the leader may not have written yet: its first file starts a new
        # log at sequence 1, which will be reported in full, so nothing is missed by waiting.
        if self._seen_epoch is None and time.time() - self._entered <= self.stale_after:
            return ()
        return self._fallback("no change notice has been published yet")

    def _adopt(self, data: dict[str, Any]) -> None:
        self._seen_epoch = data["epoch"]
        self._seen_seq = data["seq"]

    def _fresh(self, data: dict[str, Any]) -> bool:
        return self._heartbeat_fresh(data["heartbeat"])

    def _heartbeat_fresh(self, heartbeat: float) -> bool:
        age = time.time() - heartbeat
        return -self.stale_after <= age <= self.stale_after

    def _fallback(self, reason: str) -> tuple[Notice, ...] | None:
        """Log ``reason`` once per episode; always ``None`` (the caller polls the vault)."""
        if reason != self._warned:
            self._warned = reason
            logger.warning(
                "shared_dir %s: %s; this process polls the vault itself until notices resume",
                self.notice_path,
                reason,
            )
        return None

    def _recovered(self) -> None:
        if self._warned is not None:
            self._warned = None
            logger.info("shared_dir %s: following the refresher's notices again", self.path)

    def _read(self) -> dict[str, Any] | None:
        """The validated notice file, or ``None`` if there is none. Raises :class:`_Invalid`."""
        assert self._dir_fd is not None
        try:
            fd = os.open(
                self._notice_name,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=self._dir_fd,
            )
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Invalid("the notice file is a symlink") from None
            raise
        try:
            problem = _not_private(os.fstat(fd), directory=False)
            if problem is not None:
                raise _Invalid(f"the notice file {problem}")
            raw = os.read(fd, MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if len(raw) > MAX_FILE_BYTES:
            raise _Invalid("the notice file is too large")
        return _parse(raw, self.key)


def _not_private(st: os.stat_result, *, directory: bool) -> str | None:
    """Why a file or directory must not be trusted, or ``None``."""
    if directory and not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if not directory and not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by this process (uid {os.geteuid()})"
    if st.st_mode & 0o077:
        return f"is accessible to other users (mode {stat.S_IMODE(st.st_mode):o}; needs 0700/0600)"
    return None


def _parse(raw: bytes, key: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise _Invalid("the notice file is corrupt (not JSON)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _Invalid("the notice file is corrupt (unknown format)")
    if data.get("key") != key:
        raise _Invalid("the notice file belongs to another key")
    epoch, seq, heartbeat, items = (
        data.get("epoch"),
        data.get("seq"),
        data.get("heartbeat"),
        data.get("notices"),
    )
    if not (
        isinstance(epoch, str)
        and isinstance(seq, int)
        and seq >= 0
        and isinstance(heartbeat, int | float)
        and isinstance(items, list)
    ):
        raise _Invalid("the notice file is corrupt (bad header)")
    notices: list[Notice] = []
    expected = seq - len(items) + 1
    for item in items:
        notice = _notice(item)
        if notice is None or notice.seq != expected:
            raise _Invalid("the notice file is corrupt (bad notice)")
        expected += 1
        notices.append(notice)
    return {"epoch": epoch, "seq": seq, "heartbeat": float(heartbeat), "notices": notices}


def _notice(item: object) -> Notice | None:
    if not isinstance(item, dict):
        return None
    seq, name, version, updated = (item.get(k) for k in ("seq", "name", "version", "updated"))
    if not isinstance(seq, int) or not isinstance(name, str) or not _NAME.fullmatch(name):
        return None
    if version is not None and not (isinstance(version, str) and _VERSION.fullmatch(version)):
        return None
    when: datetime | None = None
    if updated is not None:
        if not isinstance(updated, str):
            return None
        try:
            when = datetime.fromisoformat(updated)
        except ValueError:
            return None
    return Notice(seq, name, version, when)
