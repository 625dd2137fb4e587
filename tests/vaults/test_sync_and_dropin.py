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


class OnEmulator(BaseSettings):
    """Classes reading from the drop-in on the test's emulator (set the ClassVars first)."""

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
            OnEmulator.url,
            OnEmulator.credential,
            dash_to_underscore=True,
            ca_file=OnEmulator.ca_file,
            fallback_vaults=OnEmulator.fallbacks,
        )
        return (init_settings, source)

    url: ClassVar[str] = ""
    credential: ClassVar[object] = None
    ca_file: ClassVar[str] = ""
    fallbacks: ClassVar[list[str]] = []


class Plain(OnEmulator):
    api_key: SecretStr
    queue_name: str


def test_dropin_source_looks_up_fallback_vaults_after_a_404(
    three: tuple[KeyVaultEmulator, str, str],
) -> None:
    emu, shared, legacy = three
    emu.seed({"api-key": "a"})
    emu.seed({"queue-name": "q-shared", "api-key": "not-this"}, "shared")
    OnEmulator.url, OnEmulator.credential = emu.vault_url, emu.sync_credential()
    OnEmulator.ca_file = emu.ca_file
    OnEmulator.fallbacks = [shared, legacy]
    settings = Plain()
    assert settings.api_key.get_secret_value() == "a"
    assert settings.queue_name == "q-shared"
    shared_gets = [r.path for r in emu.requests if r.vault == "shared" and r.status != 401]
    assert shared_gets == ["/secrets/queue-name/"]
    assert [r for r in emu.requests if r.vault == "legacy"] == []


class Flags(OnEmulator):
    feature_flags: dict[str, bool]  # read entry by entry: the drop-in lists the vaults for it


def test_dropin_lists_the_fallback_vaults_too(three: tuple[KeyVaultEmulator, str, str]) -> None:
    """Entries of a dict field (known only by listing) that live in a fallback vault are found:
    each vault is listed once; an entry in both comes from the primary."""
    emu, _, legacy = three
    emu.seed({"feature-flags--alpha": "true", "feature-flags--both": "true"})
    emu.seed({"feature-flags--beta": "false", "feature-flags--both": "false"}, "legacy")
    OnEmulator.url, OnEmulator.credential = emu.vault_url, emu.sync_credential()
    OnEmulator.ca_file = emu.ca_file
    OnEmulator.fallbacks = [legacy]
    settings = Flags()
    assert settings.feature_flags == {"alpha": True, "beta": False, "both": True}
    lists = [(r.vault, r.path) for r in emu.requests if r.method == "GET" and r.status == 200]
    assert sorted(v for v, p in lists if p == "/secrets") == ["default", "legacy"]  # at once
    assert [r for r in emu.requests if r.vault == "shared"] == []
