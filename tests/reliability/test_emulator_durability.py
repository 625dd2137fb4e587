"""Durability of the emulator's ``--data`` SQLite store.

Concurrent writers (several SDK clients in several processes, plus direct store writes), ``kill -9``
of the CLI emulator at seeded-random moments (mid-write and mid-startup), restart on the same
file. Targets: no acknowledged write lost (every ``set_secret`` that returned is readable later
with the same version and value), ``PRAGMA integrity_check`` = ok after every kill, and the
emulator starts fine afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _emulator_cli import EmulatorProcess, child_env
from _figures import record

from kvconfig.emulator import CertificateAuthority, KeyVaultEmulator

SEED = 20261122
ROUNDS = 8
WRITER_PROCESSES = 2
CLIENTS_PER_WRITER = 3

# One writer process: CLIENTS aio SecretClients writing in parallel (own names and a few shared
# names, so rows with many versions are rewritten by concurrent writers; now and then an own name
# is deleted again), printing one line per acknowledged write. No retries: when the emulator dies,
# the writer dies with it.
WRITER = """
import asyncio, os, ssl, sys
import aiohttp
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity.aio import ManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient

TAG, CLIENTS = sys.argv[1], int(sys.argv[2])

async def client_loop(credential, ctx, c):
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
    async with SecretClient(
        os.environ["VAULT_URL"], credential, verify_challenge_resource=False, retry_total=0,
        transport=AioHttpTransport(session=session, session_owner=True),
    ) as client:
        for i in range(100_000):
            name = f"shared-{i % 3}" if i % 4 == 0 else f"{TAG}-c{c}-{i}"
            value = f"{TAG}-c{c}-{i}"
            secret = await client.set_secret(name, value)
            print("ack", name, secret.properties.version, value, flush=True)
            if i % 10 == 5 and not name.startswith("shared-"):
                print("deleting", name, flush=True)
                await client.delete_secret(name)
                print("deleted", name, flush=True)

async def main():
    ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    async with ManagedIdentityCredential() as credential:
        await asyncio.gather(*(client_loop(credential, ctx, c) for c in range(CLIENTS)))

asyncio.run(main())
"""

# Reads the ledger from stdin (JSON) and prints, as JSON, every acknowledged (name, version) that
# is missing or holds another value. A name whose delete was acknowledged must be deleted with that
# version; one whose delete was under way at the kill may be either active or deleted.
READER = """
import asyncio, json, os, ssl, sys
import aiohttp
from azure.core.exceptions import ResourceNotFoundError
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity.aio import ManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient

async def main():
    ledger = json.load(sys.stdin)
    deleted, deleting = set(ledger["deleted"]), set(ledger["deleting"])
    ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
    lost = []
    gate = asyncio.Semaphore(16)
    async with ManagedIdentityCredential() as credential, SecretClient(
        os.environ["VAULT_URL"], credential, verify_challenge_resource=False,
        transport=AioHttpTransport(session=session, session_owner=True),
    ) as client:
        async def active(name, version):
            try:
                return (await client.get_secret(name, version)).value
            except ResourceNotFoundError:
                return None

        async def deleted_version(name):
            try:
                return "deleted:" + (await client.get_deleted_secret(name)).properties.version
            except ResourceNotFoundError:
                return None

        async def check(name, version, value):
            async with gate:
                if name in deleted:
                    got, want = await deleted_version(name), ["deleted:" + version]
                elif name in deleting:
                    got = await active(name, version) or await deleted_version(name)
                    want = [value, "deleted:" + version]
                else:
                    got, want = await active(name, version), [value]
            if got not in want:
                lost.append([name, version, value, got])
        await asyncio.gather(*(check(*item) for item in ledger["acked"]))
    print(json.dumps(lost))

asyncio.run(main())
"""


def integrity(data: Path, scratch: Path) -> str:
    """``PRAGMA integrity_check`` of the files as a kill left them (on a copy, WAL included, so
    the check's own recovery does not change what the restart sees)."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    for suffix in ("", "-wal", "-shm"):
        source = data.with_name(data.name + suffix)
        if source.exists():
            shutil.copyfile(source, scratch / source.name)
    copy = scratch / data.name
    if not copy.exists():
        return "ok (no file yet)"
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        conn.execute("SELECT count(*) FROM secrets").fetchone()  # the schema is there
    return ", ".join(str(r[0]) for r in rows)


@dataclass
class Ledger:
    """What the writers were told: acknowledged versions, deletes started and acknowledged."""

    acked: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, version) -> value
    deleting: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)

    def note(self, line: str) -> None:
        match line.split():
            case ["ack", name, version, value]:
                self.acked[(name, version)] = value
            case ["deleting", name]:
                self.deleting.add(name)
            case ["deleted", name]:
                self.deleted.add(name)
            case _:
                raise AssertionError(f"unexpected writer output: {line!r}")


class Writers:
    """Writer processes for one round; their acks are collected by reader threads."""

    def __init__(self, env: dict[str, str], round_no: int, ledger: Ledger) -> None:
        self.ledger = ledger
        self._before = len(ledger.acked)
        self._lock = threading.Lock()
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, f"r{round_no}w{w}", str(CLIENTS_PER_WRITER)],
                env=child_env(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for w in range(WRITER_PROCESSES)
        ]
        self._threads = [threading.Thread(target=self._read, args=(p,)) for p in self.procs]
        for thread in self._threads:
            thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lock:
                self.ledger.note(line)

    def count(self) -> int:
        """Writes acknowledged in this round."""
        with self._lock:
            return len(self.ledger.acked) - self._before

    def finish(self) -> None:
        """Wait for the writers to die (the emulator is gone)."""
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in self._threads:
            thread.join(timeout=30)
        for proc in self.procs:
            assert proc.stdout is not None
            proc.stdout.close()


def read_back(env: dict[str, str], ledger: Ledger) -> list[list[str | None]]:
    doc = {
        "acked": [[name, version, value] for (name, version), value in ledger.acked.items()],
        "deleted": sorted(ledger.deleted),
        "deleting": sorted(ledger.deleting - ledger.deleted),
    }
    result = subprocess.run(
        [sys.executable, "-c", READER],
        input=json.dumps(doc),
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lost: list[list[str | None]] = json.loads(result.stdout)
    return lost


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "vault.db"
    scratch = tmp_path / "check"
    ledger = Ledger()
    kills = startup_kills = 0
    integrity_failures: list[str] = []

    for round_no in range(ROUNDS):
        emulator = EmulatorProcess("--data", str(data))
        try:
            if round_no % 4 == 0:
                # Mid-startup (round 0: the very first start, CA and schema being created):
                # Python imports, CA load, SQLite open, listening - wherever it is.
                time.sleep(rng.uniform(0.0, 1.0))
                emulator.kill()
                startup_kills += 1
            else:
                env = emulator.wait_ready()
                writers = Writers(env, round_no, ledger)
                target = rng.randint(1, 200)
                deadline = time.monotonic() + 30
                while writers.count() < target and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.05))  # land anywhere inside a write
                emulator.kill()
                writers.finish()
            kills += 1
        finally:
            emulator.kill()
        check = integrity(data, scratch)
        if check not in ("ok", "ok (no file yet)"):
            integrity_failures.append(f"round {round_no}: {check}")

    final = EmulatorProcess("--data", str(data))
    try:
        env = final.wait_ready()  # starts fine after every kind of kill
        lost = read_back(env, ledger)
    finally:
        assert final.stop() == 0
    final_check = integrity(data, scratch)

    record("emulator.durability.rounds", ROUNDS)
    record("emulator.durability.kill9", kills)
    record("emulator.durability.kill9_during_startup", startup_kills)
    record("emulator.durability.writes_acknowledged", len(ledger.acked))
    record("emulator.durability.deletes_acknowledged", len(ledger.deleted))
    record("emulator.durability.writes_lost", len(lost), target="0")
    record("emulator.durability.corrupt_files", len(integrity_failures), target="0")
    assert len(ledger.acked) >= 100 and ledger.deleted, "too few writes to mean anything"
    assert lost == [], lost[:10]
    assert integrity_failures == []
    assert final_check == "ok"


@pytest.mark.slow
async def test_concurrent_sdk_and_direct_writers_in_one_process(
    tmp_path: Path, keyvault_ca: CertificateAuthority
) -> None:
    """Several SDK clients and direct ``set_secret`` calls write the same rows at once; after
    a clean close and a restart on the file, every acknowledged version is there."""
    data = tmp_path / "vault.db"
    acked: dict[tuple[str, str], str] = {}
    writes = 40

    async with KeyVaultEmulator(data=data, ca=keyvault_ca) as emu:

        async def sdk_writer(c: int) -> None:
            async with emu.secret_client(retry_total=0) as client:
                for i in range(writes):
                    name = f"shared-{i % 3}" if i % 2 else f"sdk{c}-{i}"
                    secret = await client.set_secret(name, f"sdk{c}-{i}")
                    assert secret.properties.version is not None
                    acked[(name, secret.properties.version)] = f"sdk{c}-{i}"

        async def direct_writer() -> None:
            for i in range(writes * 2):
                name = f"shared-{i % 3}"
                acked[(name, emu.set_secret(name, f"direct-{i}"))] = f"direct-{i}"
                await asyncio.sleep(0.001)

        await asyncio.gather(*(sdk_writer(c) for c in range(4)), direct_writer())

    with contextlib.closing(sqlite3.connect(data)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    lost = []
    async with (
        KeyVaultEmulator(data=data, ca=keyvault_ca) as emu,
        emu.secret_client() as client,
    ):
        for (name, version), value in acked.items():
            try:
                got = (await client.get_secret(name, version)).value
            except Exception as exc:  # ResourceNotFoundError: the version was lost
                got = type(exc).__name__
            if got != value:
                lost.append((name, version, value, got))
    record("emulator.durability.in_process_writes_acknowledged", len(acked))
    record("emulator.durability.in_process_writes_lost", len(lost), target="0")
    assert lost == [], lost[:10]


ONE_WRITE = """
import asyncio, os, ssl, sys
import aiohttp
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity.aio import ManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient

async def main():
    ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
    async with ManagedIdentityCredential() as credential, SecretClient(
        os.environ["VAULT_URL"], credential, verify_challenge_resource=False,
        transport=AioHttpTransport(session=session, session_owner=True),
    ) as client:
        secret = await client.set_secret(sys.argv[1], sys.argv[2])
        print("ack", sys.argv[1], secret.properties.version, sys.argv[2], flush=True)

asyncio.run(main())
"""


def _write(env: dict[str, str], name: str, value: str, ledger: Ledger) -> None:
    result = subprocess.run(
        [sys.executable, "-c", ONE_WRITE, name, value],
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ledger.note(result.stdout)


@pytest.mark.slow
def test_two_emulators_on_one_data_file_lose_nothing(tmp_path: Path) -> None:
    """A second ``kvconfig emulator --data`` on a file another one serves either refuses to start
    (one line, no traceback) or loses no write acknowledged by either."""
    data = tmp_path / "vault.db"
    first = EmulatorProcess("--data", str(data))
    second: EmulatorProcess | None = None
    ledger = Ledger()
    try:
        first_env = first.wait_ready()
        _write(first_env, "shared", "from-first", ledger)
        second = EmulatorProcess("--data", str(data))
        try:
            second_env = second.wait_ready()
        except AssertionError:
            refused = True
        else:
            refused = False
            _write(second_env, "shared", "from-second", ledger)
            _write(first_env, "shared", "from-first-again", ledger)  # rewrites the whole row
            assert second.stop() == 0
        assert first.stop() == 0
        if refused:
            _, err = second.proc.communicate(timeout=30)
            assert second.proc.returncode == 1
            assert err.startswith("kvconfig emulator: ") and "Traceback" not in err, err
            assert len(err.strip().splitlines()) == 1, err

        final = EmulatorProcess("--data", str(data))
        try:
            lost = read_back(final.wait_ready(), ledger)
        finally:
            assert final.stop() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
    record("emulator.durability.second_emulator_refused", refused)
    record("emulator.durability.two_emulators_writes_lost", len(lost), target="0")
    assert lost == [], lost


# Runs `kvconfig emulator --data FILE` and SIGKILLs itself right after its K-th open of a file for
# writing under the data directory: a kill -9 at the worst moment of each file write (created or
# truncated, nothing written yet). SQLite's own files are opened in C and not counted: SQLite
# handles its crashes; this is about the files the emulator writes itself (the CA next to the data).
CRASH_AT_WRITE = """
import io, os, signal, sys
from pathlib import Path

data_dir, crash_at, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]
opened = 0

def writing(mode):
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return bool(mode & (os.O_WRONLY | os.O_RDWR))

def crash_after(opener):
    def hooked(file, *args, **kwargs):
        global opened
        result = opener(file, *args, **kwargs)
        mode = args[0] if args else kwargs.get("mode", kwargs.get("flags", "r"))
        if not isinstance(file, int) and writing(mode):
            if str(Path(file).resolve()).startswith(data_dir):
                opened += 1
                if opened == crash_at:
                    os.kill(os.getpid(), signal.SIGKILL)
        return result
    return hooked

os.open = crash_after(os.open)
io.open = crash_after(io.open)
from kvconfig._cli import main
sys.exit(main(["emulator", "--data", data]))
"""


@pytest.mark.slow
def test_kill_9_at_each_file_write_of_the_first_start(tmp_path: Path) -> None:
    """A kill at any of the emulator's own file writes during its first start (the CA kept next
    to the data) leaves a directory the emulator starts on afterwards."""
    crash_points = 0
    for crash_at in range(1, 20):
        directory = (tmp_path / f"crash-{crash_at}").resolve()
        directory.mkdir()
        data = directory / "vault.db"
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_AT_WRITE, str(directory), str(crash_at), str(data)],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        ready = proc.stdout.readline().startswith("export ")
        if ready:  # no crash_at-th write: every write point has been tried
            proc.terminate()
            proc.communicate(timeout=30)
            break
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err
        crash_points += 1
        restarted = EmulatorProcess("--data", str(data))
        try:
            restarted.wait_ready()  # raises with the emulator's stderr if it cannot start
        finally:
            assert restarted.stop() == 0
    record("emulator.durability.first_start_crash_points", crash_points)
    assert crash_points >= 2  # the CA certificate and its key, at least
