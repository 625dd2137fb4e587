"""``kvconfig emulator``: run a local Key Vault in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import shlex
import signal
import sqlite3
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvconfig.emulator._access import PERMISSIONS, parse_identity_flag
from kvconfig.emulator._auth import DEFAULT_CLIENT_ID, TENANT_ID
from kvconfig.emulator._certs import CertificateAuthority
from kvconfig.emulator._emulator import KeyVaultEmulator
from kvconfig.emulator._events import SubscriptionValidationError
from kvconfig.emulator._server import RequestRecord

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  eval "$(kvconfig emulator &)"          in the background, its environment in this shell;
  kill $KVCONFIG_EMULATOR_PID            stop it
  kvconfig emulator --data .kv/vault.db  keep secrets (and the CA) across restarts
  kvconfig emulator --vault second       a second vault too, at $VAULT_URL_SECOND
  kvconfig emulator --latency-ms 20      answer like a vault one network hop away
  kvconfig emulator --log-requests       one stderr line per request (count what clients send)
  kvconfig emulator --identity app:get,list@default
                                         identity `app` (AZURE_CLIENT_ID=app) may only get and
                                         list secrets of vault `default` (all on other vaults)
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
            "IDENTITY_HEADER, KEY_VAULT_NAME, HTTPS_PROXY, NO_PROXY, KVCONFIG_EMULATOR_PID), "
            "then closes stdout and serves until "
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
        "--proxy-port",
        type=int,
        default=0,
        help="port of the HTTPS proxy that routes NAME.vault.azure.net to vault NAME",
    )
    parser.add_argument(
        "--log-requests",
        action="store_true",
        help="print one line per vault request to stderr: time, vault, method, path, status, ms "
        "(never a body, a query or a token)",
    )
    parser.add_argument(
        "--identity",
        action="append",
        default=[],
        metavar="CLIENT_ID[:PERMS][@VAULT]",
        help="declare a managed identity and its secret permissions (comma-separated: "
        + ",".join(sorted(PERMISSIONS))
        + ", or all) on one vault or, without @VAULT, every vault; repeatable. The client id "
        "`default` is the identity used without AZURE_CLIENT_ID",
    )
    parser.add_argument(
        "--client-secret",
        action="append",
        default=[],
        metavar="CLIENT_ID=SECRET",
        help="make an identity a service principal with this secret: EnvironmentCredential "
        "(AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID="
        f"{TENANT_ID}) then gets tokens from login.microsoftonline.com through the proxy",
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=24 * 3600,
        metavar="SECONDS",
        help="lifetime of issued tokens (default 86400)",
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


def format_request(record: RequestRecord) -> str:
    """One ``--log-requests`` line: UTC time, vault, method, path, status, milliseconds."""
    stamp = dt.datetime.fromtimestamp(record.wall_time, dt.UTC).isoformat(timespec="milliseconds")
    path = record.path.encode("unicode_escape").decode("ascii")  # one line, whatever was sent
    return (
        f"{stamp.replace('+00:00', 'Z')} {record.vault or '-'} {record.method} {path} "
        f"{record.status} {record.duration_ms:.1f}ms"
    )


def log_request(record: RequestRecord) -> None:
    print(format_request(record), file=sys.stderr, flush=True)


def _declare_identities(
    emu: KeyVaultEmulator, flags: list[str], client_secrets: Sequence[str] = ()
) -> None:
    """Apply ``--identity`` flags (without @VAULT they set the identity's permissions on every
    vault, with @VAULT on that vault only; later flags win) and ``--client-secret`` flags."""
    secrets: dict[str, str] = {}
    for flag in client_secrets:
        client_id, sep, secret = flag.partition("=")
        if not sep or not client_id.strip() or not secret:
            raise ValueError("--client-secret needs CLIENT_ID=SECRET")
        secrets[client_id.strip()] = secret
    declared: dict[str, tuple[frozenset[str], dict[str, frozenset[str]]]] = {
        client_id: (PERMISSIONS, {}) for client_id in secrets
    }
    for flag in flags:
        client_id, permissions, vault = parse_identity_flag(flag)
        if client_id.lower() == "default":
            client_id = DEFAULT_CLIENT_ID
        everywhere, per_vault = declared.get(client_id, (PERMISSIONS, {}))
        if vault is None:
            everywhere = permissions
        else:
            per_vault[vault] = permissions
        declared[client_id] = (everywhere, per_vault)
    for client_id, (everywhere, per_vault) in declared.items():
        emu.add_identity(
            client_id, everywhere, vaults=per_vault, client_secret=secrets.get(client_id)
        )


def run(args: argparse.Namespace) -> int:
    """Entry point of the sub-command."""
    try:
        return asyncio.run(_serve(args))
    except (OSError, sqlite3.Error, ValueError) as exc:  # port in use, unusable data file, ...
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
        proxy_port=args.proxy_port,
        request_logger=log_request if args.log_requests else None,
        token_lifetime_s=args.token_lifetime,
    ) as emu:
        _declare_identities(emu, args.identity, args.client_secret)
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
