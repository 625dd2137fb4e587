"""``kvconfig explain``: the report against the emulator, exit status, JSON, and never a value."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from kvconfig import Secret
from kvconfig._cli import main
from kvconfig._report import explain
from kvconfig.emulator import KeyVaultEmulator

from .conftest import child_env, run_kvconfig

# A service whose class has every kind of trouble: a missing required secret, a disabled
# required secret, a disabled optional one, two fields colliding on one name, an invalid name.
BAD_SETTINGS = """
from typing import Annotated
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings
from kvconfig import Secret

class Database(BaseModel):
    host: str
    password: SecretStr

class Settings(BaseSettings):
    database: Database
    api_key: SecretStr
    api_token: Annotated[SecretStr, Secret("API-KEY")]
    smtp_password: SecretStr
    webhook_secret: SecretStr
    legacy_token: SecretStr | None = None
    bad: Annotated[str, Secret("bad_name")] = "x"
    log_level: str = "INFO"
"""

GOOD_SETTINGS = """
from pydantic import SecretStr
from pydantic_settings import BaseSettings

class Settings(BaseSettings):
    api_key: SecretStr
    log_level: str = "INFO"
"""

# Values that must never appear in any output.
VALUES = {
    "database--host": "db-host-value-7f3",
    "database--password": "db-password-value-91c",
    "api-key": "api-key-value-2b8",
    "webhook-secret": "webhook-value-c44",
    "legacy-token": "legacy-value-e10",
}


def seed_bad(emu: KeyVaultEmulator) -> None:
    emu.seed(VALUES)
    emu.update_secret("webhook-secret", enabled=False)
    emu.update_secret("legacy-token", enabled=False)


def assert_no_values(*outputs: str) -> None:
    for output in outputs:
        for value in VALUES.values():
            assert value not in output


def write_module(directory: Path, name: str, source: str) -> str:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return name


# -- against the real CLI emulator process, DefaultAzureCredential through its printed env ----


class EmulatorProcess:
    """``kvconfig emulator`` in a subprocess and the environment it exported."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvconfig", "emulator"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.env: dict[str, str] = {}
        while "IDENTITY_HEADER" not in self.env or "VAULT_URL" not in self.env:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"emulator exited: {self.proc.communicate()[1]}")
            key, value = shlex.split(line.removeprefix("export "))[0].split("=", 1)
            self.env[key] = value

    def stop(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=30)


@pytest.fixture
def emulator_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorProcess]:
    process = EmulatorProcess()
    try:
        for key, value in process.env.items():
            # Not SSL_CERT_FILE: kvconfig's system SSL context is built once per process (the
            # sync SDK used for seeding trusts REQUESTS_CA_BUNDLE).
            if key != "SSL_CERT_FILE":
                monkeypatch.setenv(key, value)
        yield process
    finally:
        process.stop()


def seed_over_sdk(vault_url: str) -> None:
    """Seed the CLI emulator as an operator would: the sync SDK and DefaultAzureCredential."""
    with (
        DefaultAzureCredential() as credential,
        SecretClient(vault_url, credential, verify_challenge_resource=False) as client,
    ):
        for name, value in VALUES.items():
            client.set_secret(name, value)
        for name in ("webhook-secret", "legacy-token"):
            client.update_secret_properties(name, enabled=False)


def test_cli_reports_missing_disabled_colliding_and_invalid(
    emulator_process: EmulatorProcess, tmp_path: Path
) -> None:
    """End to end, as a user runs it: the emulator's exports are the only configuration."""
    seed_over_sdk(emulator_process.env["VAULT_URL"])
    module = write_module(tmp_path, "bad_service_settings", BAD_SETTINGS)
    env = child_env(emulator_process.env)
    url = emulator_process.env["VAULT_URL"]

    table = run_kvconfig("explain", f"{module}:Settings", "--vault-url", url, env=env, cwd=tmp_path)
    as_json = run_kvconfig(
        "explain", f"{module}:Settings", "--json", "--ca-file", env["SSL_CERT_FILE"],
        env={k: v for k, v in env.items() if k != "VAULT_URL"} | {"VAULT_URL": url},
        cwd=tmp_path,
    )  # fmt: skip

    assert table.returncode == 1, table.stderr
    assert as_json.returncode == 1, as_json.stderr
    assert_no_values(table.stdout, table.stderr, as_json.stdout, as_json.stderr)
    assert "\x1b[" not in table.stdout  # not a terminal: no colour
    lines = {line.split()[0]: line for line in table.stdout.splitlines() if line.startswith("  ")}
    assert "found" in lines["database.host"] and lines["database.host"].rstrip().endswith("vault")
    assert "missing" in lines["smtp_password"] and "MISSING" in lines["smtp_password"]
    assert "disabled" in lines["webhook_secret"] and "MISSING" in lines["webhook_secret"]
    assert "(collision!)" in lines["api_key"] and "(collision!)" in lines["api_token"]
    assert "(invalid!)" in lines["bad"]
    assert "FAIL" in table.stdout

    report = json.loads(as_json.stdout)
    assert report["ok"] is False and report["vault_url"] == url
    fields = {f["field"]: f for f in report["fields"]}
    assert fields["database.password"]["status"] == "found"
    assert len(fields["database.password"]["version"]) == 32
    assert fields["database.password"]["updated"] is not None
    assert (fields["smtp_password"]["status"], fields["smtp_password"]["winner"]) == (
        "missing",
        None,
    )
    assert fields["webhook_secret"]["status"] == "disabled"
    assert fields["webhook_secret"]["satisfied"] is False
    assert (fields["legacy_token"]["status"], fields["legacy_token"]["winner"]) == (
        "disabled",
        "default",
    )
    assert fields["api_token"]["name_problem"] == "collision"
    assert fields["bad"]["status"] == "not-requested"
    assert fields["log_level"]["winner"] == "default"
    kinds = sorted(p["kind"] for p in report["problems"] if p["severity"] == "error")
    assert kinds == ["collision", "invalid_name", "unsatisfied", "unsatisfied"]
    unsatisfied = {p["fields"][0] for p in report["problems"] if p["kind"] == "unsatisfied"}
    assert unsatisfied == {"smtp_password", "webhook_secret"}
    # One GET per valid planned name (api-key and API-KEY are one secret), no list.
    assert report["requests"] == 8


# -- in process: exit status 0, sources, precedence --------------------------------------------


def test_exit_zero_when_the_class_would_load(
    threaded_vault: KeyVaultEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    threaded_vault.seed({"api-key": "api-key-value-2b8"})
    module = write_module(tmp_path, "good_service_settings", GOOD_SETTINGS)
    monkeypatch.syspath_prepend(str(tmp_path))

    status = main(
        ["explain", f"{module}:Settings", "--ca-file", str(threaded_vault.ca_file)]
    )  # the URL comes from VAULT_URL

    out, err = capsys.readouterr()
    assert status == 0, err
    assert "OK: KeyVault.load(good_service_settings:Settings) would succeed." in out
    assert_no_values(out, err)


class Db(BaseModel):
    host: str
    password: SecretStr


class Layered(BaseSettings):
    db: Db
    api_key: SecretStr
    region: str = "westeurope"
    pinned: Annotated[str, Secret("pinned-thing", version="0" * 32)] = "none"
    flags: dict[str, bool] = {}


async def test_environment_and_dotenv_win_over_the_vault(
    keyvault_emulator: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keyvault_emulator.seed(
        {"db--host": "h", "db--password": "p", "api-key": "k", "region": "r", "flags": "{}"}
    )
    monkeypatch.setenv("API_KEY", "from-env")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("REGION=from-dotenv\n")
    monkeypatch.setitem(Layered.model_config, "env_file", ".env")

    report = await explain(
        Layered,
        vault_url=keyvault_emulator.vault_url,
        credential=keyvault_emulator.credential(),
        ca_file=keyvault_emulator.ca_file,
    )

    fields = {f.field: f for f in report.fields}
    assert fields["api_key"].winner == "env" and fields["api_key"].sources == ("env", "vault")
    assert fields["region"].winner == "dotenv" and fields["region"].sources == ("dotenv", "vault")
    assert (fields["api_key"].env_var, fields["region"].env_var) == ("API_KEY", "REGION")
    assert fields["db.host"].env_var is None
    assert fields["db.host"].winner == "vault" and fields["db.host"].status == "found"
    assert fields["db"].nested and fields["db"].status == "missing"
    assert fields["pinned"].pinned_version == "0" * 32 and fields["pinned"].status == "missing"
    assert fields["flags"].winner == "vault"
    assert report.source_order == ("init", "env", "dotenv", "vault", "secrets-dir", "default")
    assert report.ok


async def test_invalid_value_is_a_validation_problem_without_the_value(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    keyvault_emulator.seed(
        {"db--host": "h", "db--password": "p", "api-key": "k", "flags": "not-json-7d1"}
    )

    report = await explain(
        Layered,
        vault_url=keyvault_emulator.vault_url,
        credential=keyvault_emulator.credential(),
        ca_file=keyvault_emulator.ca_file,
    )

    assert not report.ok
    errors = [p for p in report.problems if p.severity == "error"]
    assert [p.kind for p in errors] == ["invalid_value"]
    assert "flags" in errors[0].message
    assert "not-json-7d1" not in json.dumps(report.to_json())
    fields = {f.field: f for f in report.fields}
    assert fields["flags"].status == "invalid-value" and fields["flags"].winner == "vault"
    assert fields["db.host"].status == "found" and fields["db.host"].satisfied


async def test_prefix_applies_to_derived_names_only(keyvault_emulator: KeyVaultEmulator) -> None:
    keyvault_emulator.seed({"prod-db--host": "h", "prod-db--password": "p", "prod-api-key": "k"})

    report = await explain(
        Layered,
        vault_url=keyvault_emulator.vault_url,
        credential=keyvault_emulator.credential(),
        ca_file=keyvault_emulator.ca_file,
        prefix="prod-",
    )

    fields = {f.field: f for f in report.fields}
    assert fields["db.host"].secret == "prod-db--host" and fields["db.host"].status == "found"
    assert fields["pinned"].secret == "pinned-thing"
    assert report.ok and report.prefix == "prod-"


async def test_an_empty_vault_names_the_secrets_to_create(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    report = await explain(
        Layered,
        vault_url=keyvault_emulator.vault_url,
        credential=keyvault_emulator.credential(),
        ca_file=keyvault_emulator.ca_file,
    )

    unsatisfied = [p for p in report.problems if p.kind == "unsatisfied"]
    # The model "db" is not repeated: its fields' lines name the secrets to create.
    assert [p.fields for p in unsatisfied] == [("db.host",), ("db.password",), ("api_key",)]
    assert [p.secret for p in unsatisfied] == ["db--host", "db--password", "api-key"]
    assert [p.kind for p in report.problems] == ["unsatisfied"] * 3
    assert not report.ok
