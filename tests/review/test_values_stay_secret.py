"""Issue 9 item 1 and the JSON-key message: locations inside a vault value are masked."""

from __future__ import annotations

import json
import logging
import traceback

import pytest
from pydantic import BaseModel, Json
from pydantic_settings import BaseSettings

from kvconfig import MissingSettingError, SettingsValidationError
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory

KEY = "sk_live_51HCANARYkey"


class Limit(BaseModel):
    limit: int


class Quotas(BaseSettings):
    quotas: dict[str, int]
    plans: dict[str, Limit]
    raw: Json[dict[str, int]]


async def test_dict_keys_of_a_vault_value_never_show(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, caplog: pytest.LogCaptureFixture
) -> None:
    keyvault_emulator.seed(
        {
            "quotas": json.dumps({KEY: "many"}),
            "plans": json.dumps({KEY + "2": {"limit": "x"}}),
            "raw": json.dumps({KEY + "3": "y"}),
        }
    )
    caplog.set_level(logging.DEBUG, logger="kvconfig")
    with pytest.raises(SettingsValidationError) as info:
        await make_vault().load(Quotas)
    error = info.value
    shown = "".join(traceback.format_exception(error)) + repr(error.errors) + caplog.text
    assert "CANARY" not in shown
    locs = {tuple(e["loc"]) for e in error.errors}  # type: ignore[arg-type]
    assert locs == {("quotas", "…"), ("plans", "…"), ("raw", "…")}
    assert "quotas.…" in str(error)


class Database(BaseModel):
    host: str
    port: int


class WithDatabase(BaseSettings):
    database: Database


async def test_declared_nested_fields_stay_in_locations(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed({"database": json.dumps({"host": "h", "port": "nope"})})
    with pytest.raises(SettingsValidationError) as info:
        await make_vault().load(WithDatabase)
    assert [tuple(e["loc"]) for e in info.value.errors] == [("database", "port")]  # type: ignore[arg-type]


async def test_json_secret_lacking_a_key_is_not_called_absent(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed({"database": json.dumps({"port": 5432})})
    with pytest.raises(MissingSettingError) as info:
        await make_vault().load(WithDatabase)
    message = str(info.value)
    assert "had none of secret(s) 'database--host'" in message
    assert "'database' exist but do not set it" in message
