"""``kvconfig emulator``: run a local Key Vault in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path
from typing import Any

from kvconfig.emulator._certs import CertificateAuthority
from kvconfig.emulator._emulator import KeyVaultEmulator
from kvconfig.emulator._events import SubscriptionValidationError

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  eval "$(kvconfig emulator &)"          in the background, its environment in this shell;
  kill $KVCONFIG_EMULATOR_PID            stop it
  kvconfig emulator --data .kv/vault.db  keep secrets (and the CA) across restarts
  kvconfig emulator --vault second       a second vault too, at $VAULT_URL_SECOND
  kvconfig emulator --latency-ms 20      answer like a vault one network hop away
  kvconfig emulator --event-webhook http://127.0.0.1:8000/events
                                         push Event Grid events to a local endpoint
"""


def add_parser(subparsers: Any) -> None:
    """Register the ``emulator`` sub-command on the ``kvconfig`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "emulator",
        help="run a local Azure Key Vault (secrets API over HTTPS)",
        description=textwrap.fill(
            "Run a local Azure Key Vault that the unmodified Azure SDK talks to. Prints shell "
            "`export` lines (VAULT_URL, SSL_CERT_FILE, REQUESTS_CA_BUNDLE, IDENTITY_ENDPOINT, "
            "IDENTITY_HEADER, KVCONFIG_EMULATOR_PID), then closes stdout and serves until "
            'SIGINT/SIGTERM. Background use: eval "$(kvconfig emulator &)"; ...; '
            "kill $KVCONFIG_EMULATOR_PID",
            width=92,
            break_on_hyphens=False,
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port of the default vault (0: any)")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="SQLite file for durable vaults; the CA is kept next to it (FILE.ca.pem)",
    )
    parser.add_argument("--latency-ms", type=float, default=0, help="added latency per request")
    parser.add_argument(
        "--vault",
        action="append",
        default=[],
        metavar="NAME",
        help="serve another named vault on its own port (repeatable); see VAULT_URL_<NAME>",
    )
    parser.add_argument(
        "--identity-port", type=int, default=0, help="port of the managed-identity endpoint"
    )
    parser.add_argument(
        "--event-webhook",
        action="append",
        default=[],
        metavar="URL",
        help="deliver the default vault's Event Grid events to this webhook after its "
        "validation handshake (repeatable)",
    )
    parser.add_argument(
        "--event-schema",
        choices=("eventgrid", "cloudevents"),
        default="eventgrid",
        help="event schema for --event-webhook (default eventgrid)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of the sub-command."""
    try:
        return asyncio.run(_serve(args))
    except (OSError, sqlite3.Error) as exc:  # port in use, unusable data file, ...
        print(f"kvconfig emulator: {exc}", file=sys.stderr)
        return 1


async def _serve(args: argparse.Namespace) -> int:
    ca: CertificateAuthority | None = None
    ca_file: Path | None = None
    if args.data is not None:
        # Absolute, so the exported SSL_CERT_FILE still works after the user changes directory.
        args.data = args.data.resolve()
        args.data.parent.mkdir(parents=True, exist_ok=True)
        # Keep the CA next to the data so clients keep trusting it across restarts.
        ca_file = args.data.with_name(args.data.name + ".ca.pem")
        key_file = args.data.with_name(args.data.name + ".ca-key.pem")
        ca = CertificateAuthority.load_or_generate(ca_file, key_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with KeyVaultEmulator(
        host=args.host,
        port=args.port,
        data=args.data,
        latency_ms=args.latency_ms,
        ca=ca,
        ca_file=ca_file,
        identity_port=args.identity_port,
    ) as emu:
        for name in args.vault:
            await emu.add_vault(name)
        for url in args.event_webhook:
            try:
                await emu.subscribe(url, schema=args.event_schema)
            except SubscriptionValidationError as exc:  # keep serving; that endpoint gets nothing
                print(f"kvconfig emulator: {exc}", file=sys.stderr)
        env = emu.environment()
        env["KVCONFIG_EMULATOR_PID"] = str(os.getpid())
        for key, value in env.items():
            print(f"export {key}={shlex.quote(value)}")
        sys.stdout.flush()
        # Release stdout so `eval "$(kvconfig emulator &)"` returns once the exports are out
        # (command substitution waits for every writer to close the pipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        print(f"kvconfig emulator: serving {emu.vault_url} (Ctrl-C to stop)", file=sys.stderr)
        await stop.wait()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
    return 0
