"""``kvconfig emulator`` as a child process for the reliability tests (imported by name)."""

from __future__ import annotations

import ipaddress
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

EXPORTS = frozenset(
    {"VAULT_URL", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"}
)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without Azure settings that would steer a credential."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_", "IDENTITY_"))}
    env.update(extra or {})
    return env


class EmulatorProcess:
    """A started ``python -m kvconfig emulator ARGS`` process.

    :meth:`wait_ready` reads the printed ``export`` lines into :attr:`env`; :meth:`kill` sends
    SIGKILL and reaps the process (only this one, by its pid).
    """

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvconfig", "emulator", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        self.env: dict[str, str] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self) -> dict[str, str]:
        """Block until every export line is printed; the emulator is then serving."""
        assert self.proc.stdout is not None
        while not self.env.keys() >= EXPORTS:
            line = self.proc.stdout.readline()
            if not line:
                _, err = self.proc.communicate(timeout=30)
                raise AssertionError(f"emulator exited ({self.proc.returncode}): {err}")
            word, assignment = line.rstrip("\n").split(" ", 1)
            assert word == "export", line
            key, value = shlex.split(assignment)[0].split("=", 1)
            self.env[key] = value
        return self.env

    def kill(self) -> int:
        """SIGKILL (if still running) and reap; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)
        return self.proc.returncode

    def stop(self) -> int:
        """SIGTERM (if still running) and reap; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            return self.kill()
        return self.proc.returncode


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets LISTENing on ``port`` (IPv4 and IPv6), from /proc/net."""
    found: set[str] = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        try:
            lines = table.read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A = TCP_LISTEN
                found.add(_address(address))
    return found


def _address(hex_address: str) -> str:
    """/proc/net's hex address (32-bit words in little-endian order) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))
