"""Azure's own quickstart program (``kv_secrets.py``, exactly as published) runs unchanged with
nothing but the emulator's exported environment: ``https://{KEY_VAULT_NAME}.vault.azure.net``
reaches the emulator through its HTTPS proxy, with the SDK's challenge-resource check on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kvconfig.emulator import CertificateAuthority, EmulatorThread

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("KVCONFIG_SHARED_DIR", ROOT.parent / "shared"))
QUICKSTART = SHARED / "reference" / "quickstart" / "kv_secrets.py"

_AMBIENT = ("AZURE_", "IDENTITY_", "MSI_", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY")


@pytest.mark.skipif(
    not QUICKSTART.exists(),
    reason=f"Azure's quickstart is not at {QUICKSTART} (a clone without ../shared beside it)",
)
def test_azure_quickstart_runs_byte_for_byte(keyvault_ca: CertificateAuthority) -> None:
    with EmulatorThread(ca=keyvault_ca) as emu:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_AMBIENT)}
        env.update(emu.environment())
        result = subprocess.run(
            [sys.executable, str(QUICKSTART)],
            input="quickstart-secret\nquickstart-value\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "Your secret is 'quickstart-value'." in result.stdout
        assert result.stdout.rstrip().endswith("done.")
        served = [(r.method, r.path, r.status) for r in emu.requests]
        # The 401 challenge, set, get (the SDK adds a trailing slash) and delete, all at vault
        # `default` through the proxy.
        assert served[:4] == [
            ("PUT", "/secrets/quickstart-secret", 401),
            ("PUT", "/secrets/quickstart-secret", 200),
            ("GET", "/secrets/quickstart-secret/", 200),
            ("DELETE", "/secrets/quickstart-secret", 200),
        ]
        assert {r.vault for r in emu.requests} == {"default"}
        assert emu.vaults.keys() == {"default"}


def test_proxy_routes_any_vault_name_and_tunnels_other_hosts(
    keyvault_ca: CertificateAuthority,
) -> None:
    """``NAME.vault.azure.net`` is vault NAME (added on first use); the id the SDK gets back
    names the host it asked for."""
    import requests
    from azure.keyvault.secrets import SecretClient

    with EmulatorThread(ca=keyvault_ca) as emu:
        env = emu.environment()
        session = requests.Session()
        session.trust_env = False
        session.proxies = {"https": env["HTTPS_PROXY"]}
        from azure.core.pipeline.transport import RequestsTransport

        client = SecretClient(
            "https://team-a.vault.azure.net",
            emu.sync_credential(),
            transport=RequestsTransport(
                session=session, session_owner=False, connection_verify=str(emu.ca_file)
            ),
        )
        with client:
            secret = client.set_secret("x", "1")
        assert secret.id.startswith("https://team-a.vault.azure.net/secrets/x/")
        assert "team-a" in emu.vaults
        assert {r.vault for r in emu.requests} == {"team-a"}
        # Any other host is tunnelled untouched (here: the identity endpoint, plain HTTP).
        from urllib.parse import urlsplit

        proxy = urlsplit(env["HTTPS_PROXY"])
        other = urlsplit(emu.identity_endpoint).netloc
        with socket.create_connection((proxy.hostname, proxy.port), timeout=10) as sock:
            sock.sendall(f"CONNECT {other} HTTP/1.1\r\nHost: {other}\r\n\r\n".encode())
            assert sock.recv(1024).startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"GET /msi/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.1 401 ")  # no X-IDENTITY-HEADER
        # A plain-HTTP proxy request is refused: the emulator exports only HTTPS_PROXY.
        reply = requests.get(
            "http://example.invalid/", proxies={"http": env["HTTPS_PROXY"]}, timeout=10
        )
        assert reply.status_code == 405
        session.close()
