"""The Settings class ``kvconfig demo`` loads: an order service's configuration.

A realistic mix: a nested database model (host, port, password), two API keys (one with an
explicit secret name), JSON feature flags, a legacy token that may be absent, a signing key, and
plain settings that usually come from the environment or their defaults. ``SecretStr`` keeps
secret values out of reprs and logs.

How fields map to secret names (``kvconfig explain`` shows the same table against a vault)::

    database.host      -> database--host          nested model: parent--field
    payments_api_key   -> payments-api-key        "_" becomes "-"
    maps_api_key       -> maps-key                explicit: Secret("maps-key")
    feature_flags      -> feature-flags           a JSON object
    log_level          -> log-level               usually ORDERS_LOG_LEVEL (env_prefix)

Run: ``.venv/bin/python examples/demo_settings.py`` prints that plan (no vault needed). Check it
against a vault: ``kvconfig explain demo_settings:Settings --vault-url "$VAULT_URL"`` from this
directory.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

from azure.identity.aio import DefaultAzureCredential
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import KeyVault, Secret


class Database(BaseModel):
    """Where the orders live."""

    host: str
    port: int = 5432
    password: SecretStr


class Settings(BaseSettings):
    """The order service's settings: vault secrets, environment overrides, defaults."""

    # Environment variables are ORDERS_LOG_LEVEL, ORDERS_DATABASE__HOST, ...; they win over the
    # vault. Secret names are not affected by env_prefix.
    model_config = SettingsConfigDict(env_prefix="ORDERS_", env_nested_delimiter="__")

    database: Database
    payments_api_key: SecretStr
    maps_api_key: Annotated[SecretStr, Secret("maps-key")]
    feature_flags: dict[str, bool] = {}
    legacy_token: SecretStr | None = None  # its secret is disabled in the demo vault
    signing_key: SecretStr  # its secret has expired in the demo vault (still served)
    log_level: str = "INFO"
    request_timeout: float = 5.0


async def main() -> int:
    """Print which secret feeds which field (planning makes no request)."""
    async with KeyVault("https://myvault.vault.azure.net", DefaultAzureCredential()) as vault:
        for planned in vault.plan(Settings):
            required = "required" if planned.required else "optional"
            print(f"{planned.field:<20} <- {planned.name:<22} {required}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
