"""Load a pydantic-settings class from Key Vault with kvconfig, against an embedded emulator.

The Settings class is the one from kvconfig's README: a nested model, a plain secret, an
explicitly named secret, a pinned version, a JSON dict and a field that is not in the vault.
Against a real vault only the ``KeyVault(...)`` line changes (``vault_url`` and
``azure.identity.aio.DefaultAzureCredential()``; no ``ca_file``). Secret values are never printed.

Run: ``.venv/bin/python examples/basic_load.py`` (no arguments; exits 0 on success).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from kvconfig import KeyVault, Secret
from kvconfig.emulator import KeyVaultEmulator


class Database(BaseModel):
    host: str
    password: SecretStr


def settings_class(signing_key_version: str) -> type[BaseSettings]:
    """The README's Settings class (built here because the pinned version is only known now)."""

    class Settings(BaseSettings):
        database: Database  # "database--host", "database--password"
        api_key: SecretStr  # "api-key"
        stripe: Annotated[SecretStr, Secret("payments-stripe-key")]  # explicit secret name
        signing_key: Annotated[SecretStr, Secret(version=signing_key_version)]  # pinned
        feature_flags: dict[str, bool] = {}  # JSON value of "feature-flags"
        log_level: str = "INFO"  # not in the vault: env or default

    return Settings


async def main() -> int:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kvconfig").setLevel(logging.INFO)  # one summary line per load
    async with KeyVaultEmulator(latency_ms=5) as emu:
        emu.seed(
            {
                "database--host": "db.internal",
                "database--password": "correct-horse-battery-staple",
                "api-key": "ak-123",
                "payments-stripe-key": "sk_test_123",
                "feature-flags": '{"new_checkout": true}',
            }
        )
        pinned = emu.set_secret("signing-key", "key-v1")
        emu.set_secret("signing-key", "key-v2")  # a newer version the class does not want
        Settings = settings_class(pinned)

        async with KeyVault(emu.vault_url, emu.credential(), ca_file=emu.ca_file) as vault:
            for planned in vault.plan(Settings):
                version = f" @ {planned.version[:8]}" if planned.version else ""
                print(f"  {planned.field:<20} <- {planned.name}{version}")
            settings = await vault.load(Settings)

        print(settings)  # SecretStr fields print as '**********'
        print(f"The emulator served {len(emu.requests)} requests (one 401 challenge).")
        ok = (
            settings.database.host == "db.internal"  # type: ignore[attr-defined]
            and settings.signing_key.get_secret_value() == "key-v1"  # type: ignore[attr-defined]
            and settings.feature_flags == {"new_checkout": True}  # type: ignore[attr-defined]
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
