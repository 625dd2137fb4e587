from __future__ import annotations

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from kvconfig.emulator import KeyVaultEmulator

from .conftest import VaultFactory


class Database(BaseModel):
    host: str
    password: SecretStr


class Settings(BaseSettings):
    database: Database
    api_key: SecretStr
    log_level: str = "INFO"


async def test_smoke(keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory) -> None:
    keyvault_emulator.seed(
        {"database--host": "db.local", "database--password": "pw-1", "api-key": "k-1"}
    )
    vault = make_vault()
    settings = await vault.load(Settings)
    assert settings.database.host == "db.local"
    assert settings.database.password.get_secret_value() == "pw-1"
    assert settings.api_key.get_secret_value() == "k-1"
    assert settings.log_level == "INFO"
    for r in keyvault_emulator.requests:
        print(r.method, r.path, r.status)
