"""plan() and ``kvconfig explain`` across three vaults: the vault, the names tried in order and
where each value came from (references included). Never a value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import Secret
from kvconfig._cli import main
from kvconfig._report import explain
from kvconfig.emulator import EmulatorThread, KeyVaultEmulator

from .conftest import Vaults

VALUES = {"api": "api-value-61d", "queue": "queue-value-0a2", "pk": "partner-value-93f"}


class Telemetry(BaseModel):
    endpoint: str


class Service(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVX_")

    api_key: SecretStr  # stg-api-key in the primary
    queue_name: str  # the legacy vault, after 404s for both names in the primary
    partner: Annotated[SecretStr, Secret("partner-key", vault="shared")]
    telemetry: Annotated[Telemetry, Secret(vault="shared")]
    referenced: SecretStr = SecretStr("unset")


def seed(vaults: Vaults) -> None:
    vaults.emu.seed({"stg-api-key": VALUES["api"]})
    vaults.emu.seed({"partner-key": VALUES["pk"], "telemetry--endpoint": "https://t"}, "shared")
    vaults.emu.seed({"queue-name": VALUES["queue"]}, "legacy")
    vaults.emu.set_secret("ref", "ref-value-5e0", "shared")


async def test_report_names_vault_names_tried_and_reference(
    vaults: Vaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(vaults)
    reference = f"@Microsoft.KeyVault(SecretUri={vaults.shared}/secrets/ref)"
    monkeypatch.setenv("KVX_REFERENCED", reference)
    report = await explain(
        Service,
        vault_url=vaults.primary,
        credential=vaults.emu.credential(),
        ca_file=vaults.emu.ca_file,
        prefix=("stg-", ""),
        vaults={"shared": vaults.shared},
        fallback_vaults=[vaults.legacy],
    )
    fields = {f.field: f for f in report.fields}
    assert report.ok, report.problems
    assert (fields["api_key"].secret, fields["api_key"].vault) == ("stg-api-key", vaults.primary)
    assert fields["api_key"].tried == (f"stg-api-key in {vaults.primary}",)
    queue = fields["queue_name"]
    assert (queue.secret, queue.vault, queue.winner) == ("queue-name", vaults.legacy, "vault")
    assert queue.tried == (
        f"stg-queue-name in {vaults.primary}",
        f"queue-name in {vaults.primary}",
        f"stg-queue-name in {vaults.legacy}",
        f"queue-name in {vaults.legacy}",
    )
    assert fields["partner"].vault == vaults.shared
    assert fields["telemetry.endpoint"].vault == vaults.shared
    assert fields["referenced"].winner == "env"
    assert fields["referenced"].reference == reference
    assert report.prefixes == ("stg-", "")
    assert report.fallback_vaults == (vaults.legacy,)
    document = json.dumps(report.to_json())
    assert all(value not in document for value in VALUES.values())
    assert "ref-value-5e0" not in document


async def test_unresolvable_reference_is_a_problem(
    vaults: Vaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(vaults)
    monkeypatch.setenv(
        "KVX_REFERENCED", f"@Microsoft.KeyVault(SecretUri={vaults.shared}/secrets/x)"
    )
    report = await explain(
        Service,
        vault_url=vaults.primary,
        credential=vaults.emu.credential(),
        ca_file=vaults.emu.ca_file,
        prefix=("stg-", ""),
        vaults={"shared": vaults.shared},
        fallback_vaults=[vaults.legacy],
    )
    assert not report.ok
    [problem] = [p for p in report.problems if p.kind == "reference"]
    assert problem.fields == ("referenced",) and "'x'" in problem.message


SERVICE_MODULE = """
from typing import Annotated
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from kvconfig import Secret

class Settings(BaseSettings):
    api_key: SecretStr
    queue_name: str
    partner: Annotated[SecretStr, Secret("partner-key", vault="shared")]
"""


def test_cli_options_and_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    thread = EmulatorThread()
    with thread as emu:
        shared = thread.call(emu.add_vault("shared"))
        legacy = thread.call(emu.add_vault("legacy"))
        _seed_sync(emu)
        for key, value in emu.environment().items():
            if key not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
                monkeypatch.setenv(key, value)
        (tmp_path / "vaults_cli_settings.py").write_text(SERVICE_MODULE)
        monkeypatch.syspath_prepend(str(tmp_path))
        args = [
            "explain",
            "vaults_cli_settings:Settings",
            "--ca-file",
            str(emu.ca_file),
            "--prefix",
            "stg-",
            "--prefix",
            "",
            "--vault",
            f"shared={shared}",
            "--fallback-vault",
            legacy,
        ]
        status = main(args)
        out, err = capsys.readouterr()
        assert status == 0, out + err
        assert "prefix: 'stg-' then ''" in out
        assert f"Fallback  {legacy}" in out and f"shared={shared}" in out
        assert "VAULT" in out and "fallback 1" in out and "shared" in out
        assert "queue-name (after 3 x 404)" in out
        status = main([*args, "--json"])
        out, _ = capsys.readouterr()
        document = json.loads(out)
        assert document["fallback_vaults"] == [legacy]
        fields = {f["field"]: f for f in document["fields"]}
        assert fields["queue_name"]["vault"] == legacy
        assert all(value not in out for value in VALUES.values())


def _seed_sync(emu: KeyVaultEmulator) -> None:
    emu.seed({"stg-api-key": VALUES["api"]})
    emu.seed({"partner-key": VALUES["pk"]}, "shared")
    emu.seed({"queue-name": VALUES["queue"]}, "legacy")
