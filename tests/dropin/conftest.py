"""The drop-in source against an ``EmulatorThread``, beside pydantic-settings' own source."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from azure.keyvault.secrets import SecretClient
from pydantic_settings import AzureKeyVaultSettingsSource as PsSource
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from pydantic_settings.sources.providers.azure import AzureKeyVaultMapping

from kvconfig import AzureKeyVaultSettingsSource
from kvconfig.emulator import EmulatorThread, KeyVaultEmulator

SourceFactory = Callable[[type[BaseSettings]], PydanticBaseSettingsSource]


@pytest.fixture
def sync_emulator() -> Iterator[KeyVaultEmulator]:
    """A fresh emulator on its own thread; asserts no kvconfig thread outlives the test."""
    with EmulatorThread() as emu:
        yield emu
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("kvconfig-")]
    assert leftover == [], leftover


class ReferenceSource(PsSource):
    """pydantic-settings' source as shipped, plus what a loopback emulator needs.

    ``verify_challenge_resource=False`` (a loopback host can never pass the check) and the
    emulator's CA for ``requests``; the sync client is kept so the test can close it (the
    shipped source never does).
    """

    ca_file: ClassVar[str] = ""
    clients: ClassVar[list[SecretClient]] = []

    def _load_env_vars(self) -> Any:
        client = SecretClient(
            vault_url=self._url,
            credential=self._credential,
            verify_challenge_resource=False,
            connection_verify=self.ca_file,
        )
        ReferenceSource.clients.append(client)
        return AzureKeyVaultMapping(
            secret_client=client,
            case_sensitive=self.case_sensitive,
            snake_case_conversion=self._snake_case_conversion,
            env_prefix=self.env_prefix,
            env_parse_none_str=self.env_parse_none_str,
        )


def with_source(cls: type[BaseSettings], factory: SourceFactory) -> type[BaseSettings]:
    """``cls`` reading (after init, env and dotenv) from the source ``factory`` builds."""

    class Loaded(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, dotenv_settings, factory(settings_cls))

    Loaded.__name__ = cls.__name__
    return Loaded


@pytest.fixture
def reference(sync_emulator: KeyVaultEmulator) -> Iterator[Callable[..., SourceFactory]]:
    """``reference(**options)``: a factory of pydantic-settings' source on the emulator."""
    ReferenceSource.ca_file = sync_emulator.ca_file
    credential = sync_emulator.sync_credential()

    def make(**options: Any) -> SourceFactory:
        return lambda cls: ReferenceSource(cls, sync_emulator.vault_url, credential, **options)

    yield make
    for client in ReferenceSource.clients:
        client.close()
    ReferenceSource.clients.clear()


@pytest.fixture
def dropin(sync_emulator: KeyVaultEmulator) -> Callable[..., SourceFactory]:
    """``dropin(**options)``: a factory of kvconfig's drop-in source on the emulator."""

    def make(*, aio: bool = False, **options: Any) -> SourceFactory:
        def build(cls: type[BaseSettings]) -> PydanticBaseSettingsSource:
            credential = sync_emulator.credential() if aio else sync_emulator.sync_credential()
            return AzureKeyVaultSettingsSource(
                cls,
                sync_emulator.vault_url,
                credential,
                ca_file=sync_emulator.ca_file,
                startup_timeout=3.0,
                **options,
            )

        return build

    return make
