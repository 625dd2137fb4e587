"""The core's public names are importable from the package root and keep their module tidy."""

from __future__ import annotations

import kvconfig

CORE = {
    "AzureKeyVaultSettingsSource",
    "FetchedSecret",
    "KeyVault",
    "KeyVaultSettingsSource",
    "PlannedSecret",
    "Secret",
    "SecretStatus",
    "SettingsPlan",
    "SyncKeyVault",
    "SyncLiveSettings",
}


def test_core_names_are_exported() -> None:
    assert set(kvconfig.__all__) >= CORE
    for name in CORE:
        assert getattr(kvconfig, name).__doc__
