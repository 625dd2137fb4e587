"""The several-vault options through the sync API and the drop-in source."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated, ClassVar

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from kvconfig import AzureKeyVaultSettingsSource, Secret, SyncKeyVault
from kvconfig.emulator import EmulatorThread, KeyVaultEmulator


class Settings(BaseSettings):
    api_key: SecretStr
    queue_name: str
    partner: Annotated[SecretStr, Secret(vault="shared")]


@pytest.fixture
def three() -> Iterator[tuple[KeyVaultEmulator, str, str]]:
    thread = EmulatorThread()
    with thread as emu:
        shared = thread.call(emu.add_vault("shared"))
        legacy = thread.call(emu.add_vault("legacy"))
        yield emu, shared, legacy
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("kvconfig-")]
    assert leftover == [], leftover


def test_sync_keyvault_takes_every_vault_option(
    three: tuple[KeyVaultEmulator, str, str],
) -> None:
    emu, shared, legacy = three
    emu.seed({"stg-api-key": "a"})
    emu.seed({"partner": "p"}, "shared")
    emu.seed({"queue-name": "q"}, "legacy")
    with SyncKeyVault(
        emu.vault_url,
        emu.sync_credential(),
        ca_file=emu.ca_file,
        vaults={"shared": shared},
        fallback_vaults=[legacy],
        prefix=("stg-", ""),
    ) as vault:
        settings = vault.load(Settings, _env_file=None)
    assert settings.api_key.get_secret_value() == "a"
    assert settings.queue_name == "q"
    assert settings.partner.get_secret_value() == "p"


class Plain(BaseSettings):
    api_key: SecretStr
    queue_name: str

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        source = AzureKeyVaultSettingsSource(
            settings_cls,
            Plain.url,
            Plain.credential,
            dash_to_underscore=True,
            ca_file=Plain.ca_file,
            fallback_vaults=Plain.fallbacks,
        )
        return (init_settings, source)

    url: ClassVar[str] = ""
    credential: ClassVar[object] = None
    ca_file: ClassVar[str] = ""
    fallbacks: ClassVar[list[str]] = []


def test_dropin_source_looks_up_fallback_vaults_after_a_404(
    three: tuple[KeyVaultEmulator, str, str],
) -> None:
    emu, shared, legacy = three
    emu.seed({"api-key": "a"})
    emu.seed({"queue-name": "q-shared", "api-key": "not-this"}, "shared")
    Plain.url, Plain.credential, Plain.ca_file = emu.vault_url, emu.sync_credential(), emu.ca_file
    Plain.fallbacks = [shared, legacy]
    settings = Plain()
    assert settings.api_key.get_secret_value() == "a"
    assert settings.queue_name == "q-shared"
    shared_gets = [r.path for r in emu.requests if r.vault == "shared" and r.status != 401]
    assert shared_gets == ["/secrets/queue-name/"]
    assert [r for r in emu.requests if r.vault == "legacy"] == []
