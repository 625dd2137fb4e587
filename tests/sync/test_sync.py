"""SyncKeyVault: load and watch from sync code, inside a running loop and from many threads."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from kvconfig import (
    ChangeEvent,
    ClosedError,
    KvConfigError,
    MissingSettingError,
    SettingsValidationError,
    SyncKeyVault,
)
from kvconfig.emulator import KeyVaultEmulator


class Database(BaseModel):
    host: str
    password: SecretStr


class Settings(BaseSettings):
    api_key: SecretStr
    database: Database
    log_level: str = "INFO"


SECRETS = {"api-key": "k1", "database--host": "db.local", "database--password": "pw"}


def _vault(emu: KeyVaultEmulator, *, sync_credential: bool = True, **kwargs: Any) -> SyncKeyVault:
    credential = emu.sync_credential() if sync_credential else emu.credential()
    options: dict[str, Any] = {"ca_file": emu.ca_file, "startup_timeout": 3.0}
    options.update(kwargs)
    return SyncKeyVault(emu.vault_url, credential, **options)


@pytest.mark.parametrize("sync_credential", [True, False], ids=["sync-cred", "aio-cred"])
def test_load_with_sync_or_async_credential(
    sync_emulator: KeyVaultEmulator, sync_credential: bool
) -> None:
    sync_emulator.seed(SECRETS)
    with _vault(sync_emulator, sync_credential=sync_credential) as vault:
        settings = vault.load(Settings)
        assert vault.plan(Settings).refs
    assert settings.api_key.get_secret_value() == "k1"
    assert settings.database.host == "db.local"
    assert vault.closed
    # one challenge, then one GET per planned secret (5: log-level and database included)
    statuses = [r.status for r in sync_emulator.requests]
    assert statuses.count(401) == 1
    assert len(statuses) == 1 + 5


def test_errors_and_close(sync_emulator: KeyVaultEmulator) -> None:
    vault = _vault(sync_emulator)
    with pytest.raises(MissingSettingError, match="api_key"):
        vault.load(Settings)
    vault.close()
    vault.close()
    with pytest.raises(ClosedError):
        vault.load(Settings)


def test_inside_a_running_loop(sync_emulator: KeyVaultEmulator) -> None:
    sync_emulator.seed(SECRETS)

    async def main() -> Settings:
        # What a notebook cell or an async framework's sync hook does: no await available.
        with _vault(sync_emulator) as vault:
            return vault.load(Settings)

    settings = asyncio.run(main())
    assert settings.database.password.get_secret_value() == "pw"


def test_one_vault_from_four_threads(sync_emulator: KeyVaultEmulator) -> None:
    sync_emulator.seed(SECRETS)
    with _vault(sync_emulator) as vault, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: vault.load(Settings), range(8)))
    assert {r.database.host for r in results} == {"db.local"}


def test_four_vaults_in_four_threads(sync_emulator: KeyVaultEmulator) -> None:
    sync_emulator.seed(SECRETS)

    def run(_: int) -> str:
        with _vault(sync_emulator) as vault:
            return vault.load(Settings).database.host

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(run, range(4))) == ["db.local"] * 4


def test_watch_refresh_callbacks_and_threads(sync_emulator: KeyVaultEmulator) -> None:
    sync_emulator.seed(SECRETS)
    events: list[tuple[int, tuple[str, ...], str]] = []
    seen = threading.Event()

    def on_change(event: ChangeEvent) -> None:
        events.append((event.generation, event.fields, threading.current_thread().name))
        seen.set()

    with _vault(sync_emulator) as vault:
        live = vault.watch(Settings, interval=3600, on_change=on_change)
        assert live.current.api_key.get_secret_value() == "k1"
        assert live.health.healthy
        assert live.refresh() is None
        sync_emulator.set_secret("api-key", "k2")
        event = live.refresh()
        assert event is not None and event.fields == ("api_key",)
        assert seen.wait(10)
        # read from other threads while refreshing
        with ThreadPoolExecutor(4) as pool:
            keys = set(pool.map(lambda _: live.current.api_key.get_secret_value(), range(100)))
        assert keys == {"k2"}
        assert live.generation == 1
    assert live.closed
    assert live.current.api_key.get_secret_value() == "k2"  # still readable after close
    with pytest.raises(ClosedError):
        live.refresh()
    assert events == [(1, ("api_key",), events[0][2])]
    assert events[0][2].startswith("kvconfig-callback")


class Ported(Settings):
    port: int = 8080


def test_health_and_on_refresh_error_from_sync_code(sync_emulator: KeyVaultEmulator) -> None:
    """The same health as the async API (serving / fresh / degraded) and on_refresh_error on the
    callback thread, with a value-free error; one bad secret does not hold back another."""
    sync_emulator.seed({**SECRETS, "port": "9000"})
    errors: list[tuple[KvConfigError, str]] = []
    seen = threading.Event()

    def on_refresh_error(error: KvConfigError) -> None:
        errors.append((error, threading.current_thread().name))
        seen.set()

    with _vault(sync_emulator) as vault:
        live = vault.watch(Ported, interval=3600, on_refresh_error=on_refresh_error)
        health = live.health
        assert health.serving and health.fresh and not health.degraded
        sync_emulator.set_secret("api-key", "k2")
        sync_emulator.set_secret("port", "not-a-port")
        event = live.refresh()
        assert event is not None and event.fields == ("api_key",)
        health = live.health
        assert health.serving and health.fresh and health.degraded
        assert [(i.kind, i.secret) for i in health.issues] == [("rejected", "port")]
        assert seen.wait(10)
        [(error, thread)] = errors
        assert isinstance(error, SettingsValidationError) and error.__context__ is None
        assert thread.startswith("kvconfig-callback")
    assert not live.health.serving


def test_failing_callback_is_logged_not_raised(
    sync_emulator: KeyVaultEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    sync_emulator.seed(SECRETS)

    def on_change(event: ChangeEvent) -> None:
        raise RuntimeError("boom")

    with _vault(sync_emulator) as vault, vault.watch(Settings, on_change=on_change) as live:
        sync_emulator.set_secret("api-key", "k3")
        assert live.refresh() is not None
    assert live.current.api_key.get_secret_value() == "k3"
    assert any("on_change callback failed" in r.getMessage() for r in caplog.records)


def test_close_from_inside_a_callback_does_not_deadlock(sync_emulator: KeyVaultEmulator) -> None:
    sync_emulator.seed(SECRETS)
    done = threading.Event()
    holder: list[Any] = []

    def on_change(event: ChangeEvent) -> None:
        holder[0].close()
        done.set()

    with _vault(sync_emulator) as vault:
        live = vault.watch(Settings, on_change=on_change)
        holder.append(live)
        sync_emulator.set_secret("api-key", "k4")
        live.refresh()
        assert done.wait(10)
    assert live.closed


SCRIPT = """
import logging, sys
from pydantic_settings import BaseSettings
from kvconfig import SyncKeyVault
from kvconfig.emulator import EmulatorThread

class S(BaseSettings):
    api_key: str

emu_thread = EmulatorThread()
emu = emu_thread.__enter__()
emu.seed({"api-key": "v"})
vault = SyncKeyVault(emu.vault_url, emu.sync_credential(), ca_file=emu.ca_file)
live = vault.watch(S, interval=3600)
print(vault.load(S).api_key, live.current.api_key)
# no close(): the atexit hook closes the vault; exit must not hang or warn
"""


def test_a_script_that_never_closes_still_exits_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["v", "v"]
    assert "Unclosed" not in result.stderr and "Traceback" not in result.stderr
