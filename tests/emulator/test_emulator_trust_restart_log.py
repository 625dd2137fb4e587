"""A shell that ran the exports keeps trusting public hosts; restarts keep tokens and the identity
header; ``--log-requests`` prints one line per request and nothing secret."""

from __future__ import annotations

import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from kvconfig.emulator import CertificateAuthority, EmulatorThread, KeyVaultEmulator
from kvconfig.emulator._certs import system_ca_pem


def _token(emu: KeyVaultEmulator) -> str:
    request = urllib.request.Request(
        f"{emu.identity_endpoint}?api-version=2019-08-01&resource=https://vault.azure.net",
        headers={"X-IDENTITY-HEADER": emu.identity_header},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        token: str = json.load(reply)["access_token"]
    return token


def _get(emu: KeyVaultEmulator, token: str, name: str) -> int:
    request = urllib.request.Request(
        f"{emu.vault_url}/secrets/{name}?api-version=7.5",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, context=emu.ssl_context(), timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_exported_trust_is_the_system_cas_plus_the_emulator_ca(
    keyvault_ca: CertificateAuthority,
) -> None:
    with EmulatorThread(ca=keyvault_ca) as emu:
        env = emu.environment()
        bundle = Path(env["SSL_CERT_FILE"])
        assert env["REQUESTS_CA_BUNDLE"] == str(bundle) == str(emu.ca_bundle_file)
        text = bundle.read_bytes()
        system = system_ca_pem()
        assert system and text.startswith(system.rstrip(b"\n"))  # public hosts stay trusted
        assert text.endswith(keyvault_ca.cert_pem)
        assert emu.ca_file.read_bytes() == keyvault_ca.cert_pem  # the CA alone is still there
        # An OpenSSL client built from the exported variable trusts both.
        ctx = ssl.create_default_context(cafile=str(bundle))
        assert len(ctx.get_ca_certs()) > 1
        assert _get(emu, _token(emu), "nothing") == 404


def test_restart_keeps_signing_key_and_identity_header(
    keyvault_ca: CertificateAuthority, tmp_path: Path
) -> None:
    data = tmp_path / "vault.db"
    with EmulatorThread(ca=keyvault_ca, data=data) as emu:
        emu.seed({"kept": "1"})
        port, header, token = int(emu.vault_url.rsplit(":", 1)[1]), emu.identity_header, _token(emu)
        assert _get(emu, token, "kept") == 200
    auth = data.with_name("vault.db.auth.json")
    assert auth.stat().st_mode & 0o777 == 0o600
    with EmulatorThread(ca=keyvault_ca, data=data, port=port) as again:
        assert again.identity_header == header
        assert _get(again, token, "kept") == 200  # a token issued before the restart
    with EmulatorThread(ca=keyvault_ca, data=tmp_path / "other.db") as fresh:
        assert fresh.identity_header != header
        assert _get(fresh, token, "kept") == 401  # another emulator's key


def test_cli_kill_9_restart_keeps_exports_and_log_requests(tmp_path: Path) -> None:
    data = tmp_path / "vault.db"

    def start() -> tuple[subprocess.Popen[str], dict[str, str]]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kvconfig", "emulator", "--data", str(data), "--log-requests"]
            + (["--port", ports[0], "--identity-port", ports[1]] if ports else []),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        env = {}
        for line in proc.stdout:
            key, value = shlex.split(line.removeprefix("export "))[0].split("=", 1)
            env[key] = value
        return proc, env

    ports: list[str] = []
    child = """
import os
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
client = SecretClient(f"https://{os.environ['KEY_VAULT_NAME']}.vault.azure.net",
                      DefaultAzureCredential())
client.set_secret("logged", "CANARY-log-value-never-printed")
print(client.get_secret("logged").value)
"""
    proc, env = start()
    try:
        ports += [str(urlsplit(env[key]).port) for key in ("VAULT_URL", "IDENTITY_ENDPOINT")]
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_"))}
        result = subprocess.run(
            [sys.executable, "-c", child],
            env=child_env | env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
    finally:
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=30)
    lines = [line for line in stderr.splitlines() if " /secrets/" in line]
    assert [line.split()[1:5] for line in lines] == [
        ["default", "PUT", "/secrets/logged", "401"],
        ["default", "PUT", "/secrets/logged", "200"],
        ["default", "GET", "/secrets/logged/", "200"],
    ]
    assert all(line.endswith("ms") and line[:4].isdigit() for line in lines)
    assert "CANARY" not in stderr and "kvemu." not in stderr  # no value, no token

    again, env2 = start()
    try:
        assert env2["IDENTITY_HEADER"] == env["IDENTITY_HEADER"]
        assert env2["SSL_CERT_FILE"] == env["SSL_CERT_FILE"]
        assert env2["VAULT_URL"] == env["VAULT_URL"]
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=30)
