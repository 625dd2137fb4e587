"""Issue 9 item 14: what init kwargs, the environment or .env supply is never requested."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory
from tests.core.conftest import secret_gets


class Database(BaseModel):
    host: str
    port: int = 5432


class Service(BaseSettings):
    api_key: str
    log_level: str = "INFO"
    database: Database


SEED = {"api-key": "k", "log-level": "DEBUG", "database--host": "db"}


async def test_init_kwargs_env_and_dotenv_fields_are_not_requested(
    keyvault_emulator: KeyVaultEmulator,
    make_vault: VaultFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    keyvault_emulator.seed(SEED)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    dotenv = tmp_path / ".env"
    dotenv.write_text("DATABASE__HOST=from-dotenv\n")
    # delimiter for nested env names, as users configure it
    settings = await make_vault().load(
        Service, api_key="from-init", _env_file=dotenv, _env_nested_delimiter="__"
    )
    assert (settings.api_key, settings.log_level) == ("from-init", "WARNING")
    assert settings.database.host == "from-dotenv"
    # Only what nothing ahead of the vault supplies: the model's JSON and its port.
    assert set(secret_gets(keyvault_emulator)) == {"database", "database--port"}


async def test_a_refused_secret_that_is_supplied_elsewhere_does_not_fail_the_load(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    class OnlyEnv(BaseSettings):
        region: str

    monkeypatch.setenv("REGION", "westeurope")
    keyvault_emulator.faults.fail_next(1, status=403)  # the next request, if any, is refused
    settings = await make_vault().load(OnlyEnv)
    assert settings.region == "westeurope"
    assert keyvault_emulator.requests == []


async def test_watch_does_not_track_supplied_fields(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed(SEED)
    async with (
        make_vault() as vault,
        vault.watch(Service, interval=60, api_key="pinned-by-init") as live,
    ):
        keyvault_emulator.clear_requests()
        keyvault_emulator.set_secret("api-key", "rotated")
        assert await live.refresh() is None
        assert live.current.api_key == "pinned-by-init"
        assert "api-key" not in secret_gets(keyvault_emulator)
