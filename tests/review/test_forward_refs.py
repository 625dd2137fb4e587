"""Issue 9 item 6: forward-referenced nested models are resolved before planning."""

from __future__ import annotations

import pytest

from kvconfig import ConfigurationError
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory
from tests.review.forward_models import Broken, Service


async def test_forward_referenced_model_is_planned_field_by_field(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    keyvault_emulator.seed({"database--host": "db", "database--port": "5432"})
    vault = make_vault()
    names = [s.name for s in vault.plan(Service)]
    assert names == ["database", "database--host", "database--port"]
    settings = await vault.load(Service)
    assert settings.database.port == 5432


async def test_incomplete_class_is_a_configuration_error_and_not_cached(
    make_vault: VaultFactory,
) -> None:
    vault = make_vault()
    with pytest.raises(ConfigurationError, match="Broken"):
        vault.plan(Broken)
    with pytest.raises(ConfigurationError):
        vault.plan(Broken)
