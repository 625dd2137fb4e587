"""``kvconfig emulator`` as a real process: printed environment, DefaultAzureCredential through the
managed-identity endpoint (sync and aio), durability across ``kill -9``, clean SIGTERM."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EXPORTS = {
    "VAULT_URL",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
}


class Cli:
    """A running ``kvconfig emulator`` process and the environment it printed."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvconfig", "emulator", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.env: dict[str, str] = {}
        while not set(self.env) >= EXPORTS:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"emulator exited: {self.proc.communicate()[1]}")
            word, assignment = line.split(" ", 1)
            assert word == "export"
            key, value = shlex.split(assignment)[0].split("=", 1)
            self.env[key] = value

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_"))}
        env.update(self.env)
        return env

    def run_child(self, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code],
            env=self.child_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


@pytest.fixture
def cli_factory() -> Iterator[type[Cli]]:
    started: list[Cli] = []

    class Tracked(Cli):
        def __init__(self, *args: str, cwd: Path | None = None) -> None:
            super().__init__(*args, cwd=cwd)
            started.append(self)

    yield Tracked
    for cli in started:
        cli.stop()


DEFAULT_CREDENTIAL_CHILD = """
import asyncio, os
from azure.identity import DefaultAzureCredential
from azure.identity.aio import DefaultAzureCredential as AioDefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets.aio import SecretClient as AioSecretClient

url = os.environ["VAULT_URL"]
with DefaultAzureCredential() as credential:
    with SecretClient(url, credential, verify_challenge_resource=False) as client:
        client.set_secret("from-sync", "sync-value")
        assert client.get_secret("from-sync").value == "sync-value"

async def main():
    async with AioDefaultAzureCredential() as credential:
        async with AioSecretClient(url, credential, verify_challenge_resource=False) as client:
            await client.set_secret("from-aio", "aio-value")
            assert (await client.get_secret("from-sync")).value == "sync-value"
            assert (await client.get_secret("from-aio")).value == "aio-value"

asyncio.run(main())
print("OK")
"""


def test_default_azure_credential_through_printed_env(cli_factory: type[Cli]) -> None:
    cli = cli_factory()
    assert cli.env["VAULT_URL"].startswith("https://127.0.0.1:")
    assert cli.env["SSL_CERT_FILE"] == cli.env["REQUESTS_CA_BUNDLE"]
    assert Path(cli.env["SSL_CERT_FILE"]).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert cli.env["IDENTITY_ENDPOINT"].startswith("http://127.0.0.1:")
    result = cli.run_child(DEFAULT_CREDENTIAL_CHILD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_wrong_identity_header_gets_no_token(cli_factory: type[Cli]) -> None:
    cli = cli_factory()
    code = """
import os, urllib.request, urllib.error
url = os.environ["IDENTITY_ENDPOINT"] + "?api-version=2019-08-01&resource=https://vault.azure.net"
req = urllib.request.Request(url, headers={"X-IDENTITY-HEADER": "wrong"})
try:
    urllib.request.urlopen(req)
except urllib.error.HTTPError as e:
    print(e.code)
"""
    result = cli.run_child(code)
    assert result.stdout.strip() == "401", result.stderr


WRITER_CHILD = """
import asyncio, os, ssl, sys
import aiohttp
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity.aio import ManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient

async def main():
    ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
    async with ManagedIdentityCredential() as credential, SecretClient(
        os.environ["VAULT_URL"], credential, verify_challenge_resource=False, retry_total=0,
        transport=AioHttpTransport(session=session, session_owner=True),
    ) as client:
        for i in range(int(sys.argv[1])):
            await client.set_secret(f"durable-{i}", f"value-{i}")
            print(f"ack {i}", flush=True)

asyncio.run(main())
"""

READER_CHILD = """
import os, sys
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

with ManagedIdentityCredential() as credential, SecretClient(
    os.environ["VAULT_URL"], credential, verify_challenge_resource=False
) as client:
    names = sorted(p.name for p in client.list_properties_of_secrets())
    for i in map(int, sys.argv[1:]):
        assert client.get_secret(f"durable-{i}").value == f"value-{i}", i
print(len(names))
"""


def test_relative_data_path_exports_an_absolute_ca_file(
    cli_factory: type[Cli], tmp_path: Path
) -> None:
    """SSL_CERT_FILE must keep working after the user changes directory."""
    cli = cli_factory("--data", "state/vault.db", cwd=tmp_path)
    ca_file = Path(cli.env["SSL_CERT_FILE"])
    assert ca_file.is_absolute()
    assert ca_file == tmp_path / "state" / "vault.db.ca-bundle.pem"
    assert ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_acknowledged_writes_survive_kill_9(cli_factory: type[Cli], tmp_path: Path) -> None:
    data = tmp_path / "vault.db"
    cli = cli_factory("--data", str(data))
    ca_file = cli.env["SSL_CERT_FILE"]
    assert Path(ca_file).parent == tmp_path  # the CA lives next to the data

    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER_CHILD, "1000"],
        env=cli.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    acked: list[int] = []
    try:
        while len(acked) < 40:
            line = writer.stdout.readline()
            assert line, writer.communicate()[1]
            acked.append(int(line.split()[1]))
        cli.proc.send_signal(signal.SIGKILL)  # while the writer keeps writing
        cli.proc.wait(timeout=30)
        rest, _ = writer.communicate(timeout=60)
        acked += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("ack")]
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
    assert cli.proc.returncode == -signal.SIGKILL
    assert len(acked) < 1000  # the kill really interrupted the writes

    restarted = cli_factory("--data", str(data))
    assert restarted.env["SSL_CERT_FILE"] == ca_file  # same CA: clients keep trusting it
    result = subprocess.run(
        [sys.executable, "-c", READER_CHILD, *map(str, acked)],
        env=restarted.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= len(acked)


def test_sigterm_stops_cleanly_and_removes_the_temp_ca(cli_factory: type[Cli]) -> None:
    cli = cli_factory("--latency-ms", "1", "--vault", "second")
    assert "VAULT_URL_SECOND" in cli.env
    ca_file = Path(cli.env["SSL_CERT_FILE"])
    assert ca_file.exists()
    cli.proc.send_signal(signal.SIGTERM)
    assert cli.proc.wait(timeout=30) == 0
    assert not ca_file.exists()


def test_startup_errors_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "kvconfig", "emulator", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.startswith("kvconfig emulator: ") and "Traceback" not in result.stderr
    assert result.stdout == ""
    a_directory = tmp_path / "not-a-file"
    a_directory.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "kvconfig", "emulator", "--data", str(a_directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_eval_in_background_returns_once_the_exports_are_out() -> None:
    script = (
        f'eval "$({shlex.quote(sys.executable)} -m kvconfig emulator 2>/dev/null &)"\n'
        'echo "$KVCONFIG_EMULATOR_PID"\n'
        f'{shlex.quote(sys.executable)} -c "import os, urllib.request, ssl; '
        "ctx = ssl.create_default_context(cafile=os.environ['SSL_CERT_FILE']); "
        "urllib.request.urlopen(os.environ['VAULT_URL'] + '/secrets?api-version=7.6', context=ctx)"
        '" 2>&1 | grep -o "HTTP Error 401"\n'
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    lines = result.stdout.split()
    pid = int(lines[0])
    try:
        assert lines[1:] == ["HTTP", "Error", "401"], result.stderr  # the challenge, over TLS
    finally:
        os.kill(pid, signal.SIGTERM)
