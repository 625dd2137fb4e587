"""``kvconfig demo``: the whole product in a few seconds, with no Azure account.

It starts an embedded Key Vault emulator (real TLS, the real SDK), seeds an order service's
secrets (database, API keys, JSON feature flags, one disabled and one expired secret), loads
``examples/demo_settings.py``'s ``Settings`` concurrently, prints where every field came from
(values of secret fields masked), then rotates the database password and shows the live
settings (``vault.watch``) picking it up in the background. No secret value is ever printed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_settings import BaseSettings

from kvconfig._cli._main import UsageError
from kvconfig._cli._render import MASK, Cell, Style, render_table, short_version
from kvconfig._refresh._events import ChangeEvent
from kvconfig._report import FieldReport, build_report
from kvconfig._vault import KeyVault
from kvconfig.emulator import KeyVaultEmulator

__all__ = ["DEMO_SECRETS", "ROTATED_PASSWORD", "add_parser", "run", "run_demo"]

# What the demo vault holds. Secret values are made up and never printed; the test suite checks
# that none of them (bar the non-secret host and flags) appears in the output.
DEMO_SECRETS: dict[str, str] = {
    "database--host": "orders-db.internal.example",
    "database--password": "pg-demo-Tr0ub4dor-3",
    "payments-api-key": "sk_demo_51HkQeLx9vT2",
    "maps-key": "AIzaDemo-7qLm2Xv9",
    "feature-flags": '{"new_checkout": true, "dark_mode": false}',
    "legacy-token": "legacy-demo-4f1c",  # disabled below
    "signing-key": "signing-demo-88aa",  # expired below
}
ROTATED_PASSWORD = "pg-demo-C0rrect-H0rse-4"
ROTATED_SECRET = "database--password"
_ENV = {"ORDERS_LOG_LEVEL": "debug"}  # as a deployment would set it: the environment wins

_DESCRIPTION = """\
See kvconfig work in a few seconds, with no Azure account: start an embedded Key Vault
emulator (real TLS, the real Azure SDK), seed an order service's secrets (database, API keys,
JSON feature flags, one disabled and one expired secret), load the Settings class of
examples/demo_settings.py concurrently and show where each field came from (vault, environment
or default; secret values masked), then rotate the database password and watch the live
settings pick it up. Secret values are never printed.
"""

_EPILOG = """\
examples:
  kvconfig demo                       the default: 20 ms of latency per request, as in Azure
  kvconfig demo --latency-ms 100      a slow network: the load still takes about one round trip
  kvconfig -v demo                    also log kvconfig's INFO lines to stderr
  NO_COLOR=1 kvconfig demo            no colour even on a terminal
"""


def add_parser(subparsers: Any) -> None:
    """Register the ``demo`` sub-command on the ``kvconfig`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="see it all work against an embedded local vault (no Azure account needed)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=20.0,
        metavar="MS",
        help="latency the emulator adds to every request, to show what concurrency saves "
        "(default 20, a typical in-region round trip)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="refresh interval of the live settings (default 0.5; services use ~60)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of the sub-command."""
    if args.latency_ms < 0 or args.interval <= 0:
        raise UsageError("--latency-ms must be >= 0 and --interval > 0")
    settings_cls = load_demo_settings()
    return asyncio.run(
        run_demo(
            settings_cls,
            out=sys.stdout,
            style=Style.for_stream(sys.stdout),
            latency_ms=args.latency_ms,
            interval=args.interval,
        )
    )


def load_demo_settings() -> type[BaseSettings]:
    """The ``Settings`` class of ``examples/demo_settings.py``.

    A wheel ships the file as ``kvconfig/_demo_settings.py``; a source checkout has it under
    ``examples/``.
    """
    here = Path(__file__).resolve().parent.parent  # the kvconfig package
    for path in (here / "_demo_settings.py", here.parent / "examples" / "demo_settings.py"):
        if path.is_file():
            module = _import_file("demo_settings", path)
            settings_cls: type[BaseSettings] = module.Settings
            return settings_cls
    raise UsageError("examples/demo_settings.py was not found next to the kvconfig package")


def _import_file(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: pydantic resolves the annotations through sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- the demo ----------------------------------------------------------------------------------


async def run_demo(
    settings_cls: type[BaseSettings],
    *,
    out: TextIO,
    style: Style,
    latency_ms: float = 20.0,
    interval: float = 0.5,
) -> int:
    """Run the demo, printing to ``out``; returns the exit status (0: everything worked)."""
    started = time.perf_counter()
    show = _Output(out, style)
    title = style("kvconfig demo", "bold")
    show.say(f"{title}: Azure Key Vault -> pydantic-settings, no Azure account needed")
    show.say()
    with _environment(_ENV), _captured_logs() as logs:
        async with KeyVaultEmulator(latency_ms=latency_ms) as emu:
            show.step(1, f"Started a local Key Vault emulator at {emu.vault_url}")
            added = f"{latency_ms:g} ms added per request" if latency_ms else "no added latency"
            show.say(f"   (TLS with its own CA, the real Azure SDK, {added})")
            _seed(emu)
            show.step(2, f"Seeded {len(DEMO_SECRETS)} secrets: a database, two API keys, JSON "
                      "feature flags, one disabled, one expired")  # fmt: skip
            async with KeyVault(emu.vault_url, emu.credential(), ca_file=emu.ca_file) as vault:
                demo = _Demo(show, emu, vault, settings_cls)
                settings = await demo.load(logs, latency_ms)
                show.say()
                ok = await demo.rotate(settings, interval)
    show.say()
    elapsed = time.perf_counter() - started
    if ok:
        show.say(style(f"Done in {elapsed:.1f} s.", "green", "bold") + " Next:")
    else:
        show.say(style(f"The live settings missed the rotation ({elapsed:.1f} s).", "red"))
    show.say("  kvconfig explain MODULE:CLASS --vault-url URL   check your class against a vault")
    show.say("  kvconfig emulator                               a local vault for tests and apps")
    return 0 if ok else 1


class _Output:
    """Where the demo writes, and how it styles."""

    def __init__(self, out: TextIO, style: Style) -> None:
        self.out = out
        self.style = style

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)  # flushed: each step shows as it happens

    def step(self, number: int, text: str) -> None:
        self.say(f"{self.style(f'{number}.', 'bold', 'cyan')} {text}")


class _Demo:
    """Steps 3 and 4: the load and its report, then the rotation seen by the live settings."""

    def __init__(
        self,
        show: _Output,
        emu: KeyVaultEmulator,
        vault: KeyVault,
        settings_cls: type[BaseSettings],
    ) -> None:
        self.show = show
        self.style = show.style
        self.emu = emu
        self.vault = vault
        self.settings_cls = settings_cls

    async def load(self, logs: list[logging.LogRecord], latency_ms: float) -> BaseSettings:
        """Load concurrently; print the cost, where each field came from, and the log lines."""
        show, style, emu = self.show, self.style, self.emu
        emu.clear_requests()
        logs.clear()
        loaded_at = time.perf_counter()
        settings = await self.vault.load(self.settings_cls)
        took_ms = (time.perf_counter() - loaded_at) * 1000
        requests = len(emu.requests)
        challenges = sum(1 for r in emu.requests if r.status == 401)
        name = f"{self.settings_cls.__module__}.{self.settings_cls.__qualname__}"
        took = style(f"{took_ms:.0f} ms", "bold")
        show.step(3, f"Loaded {name} concurrently: {took}, {style(str(requests), 'bold')} requests")
        show.say(f"   ({challenges} auth challenge + {requests - challenges} GETs: the first "
                 "alone, then all at once)")  # fmt: skip
        if latency_ms:
            show.say(f"   One at a time, {requests} round trips of {latency_ms:g} ms would take "
                     f"{requests * latency_ms:.0f} ms or more")  # fmt: skip
        show.say()
        show.say(render_table(_HEADERS, await self._rows(settings), style))
        show.say()
        show.say(f"   {style('kvconfig logged', 'bold')} (logger 'kvconfig'; never a value):")
        for record in logs:
            colour = "yellow" if record.levelno >= logging.WARNING else "dim"
            show.say(f"     {style(record.levelname, colour)} {record.getMessage()}")
        return settings

    async def _rows(self, settings: BaseSettings) -> list[list[str | Cell]]:
        # Where each value came from: the explain report over the secrets load() just fetched,
        # read again from the vault's cache (no request).
        plan = self.vault.plan(self.settings_cls)
        fetched = await self.vault._open().fetch(plan.refs)
        report = build_report(
            self.settings_cls, plan, (), fetched.secrets, vault_url=self.vault.vault_url,
            requests=0, duration_ms=0.0,
        )  # fmt: skip
        return [_row(field, settings) for field in report.fields if not field.nested]

    async def rotate(self, loaded: BaseSettings, interval: float) -> bool:
        """Rotate the database password; print the ChangeEvent the live settings publish."""
        show, style, emu = self.show, self.style, self.emu
        async with self.vault.watch(self.settings_cls, interval=interval) as live:
            changes = live.changes()
            show.step(4, f"Watching: live settings refresh in the background every {interval:g} s")
            emu.clear_requests()
            emu.set_secret(ROTATED_SECRET, ROTATED_PASSWORD)
            rotated_at = time.perf_counter()
            show.say(f"   Rotated {ROTATED_SECRET} in the vault (a new version, as a password "
                     "rotation does)")  # fmt: skip
            event = await _next_change(changes, timeout=max(10.0, 5 * interval))
            if event is None:
                return False
            picked_up = time.perf_counter() - rotated_at
            lists = sum(1 for r in emu.requests if r.path.rstrip("/") == "/secrets")
            gets = len(emu.requests) - lists
            show.say(f"   {style('ChangeEvent', 'bold')} generation {event.generation}, "
                     f"{picked_up:.2f} s after the rotation:")  # fmt: skip
            for change in event.secrets:
                show.say(f"     {', '.join(event.fields)}: {change.name} "
                         f"{short_version(change.old_version)} {style('→', 'bold')} "
                         f"{short_version(change.new_version)}")  # fmt: skip
            current = live.current
        applied = _secret(current) == ROTATED_PASSWORD != _secret(loaded)
        mark = style("✓", "green") if applied else style("✗", "red")
        show.say(f"   {mark} live.current.database.password holds the new value ({MASK})")
        show.say(f"   The refresh cost {lists} list request(s) + {gets} GET(s): it lists the "
                 "vault and re-reads only the secrets that changed")  # fmt: skip
        return applied


_HEADERS = ["FIELD", "SECRET", "STATUS", "VERSION", "SOURCE", "VALUE"]
_STATUS_STYLE = {"found": ("green",), "disabled": ("red",), "expired": ("red",)}


def _row(field: FieldReport, settings: BaseSettings) -> list[str | Cell]:
    source = field.winner or "MISSING"
    if field.env_var:
        source += f" {field.env_var}"
    return [
        field.field,
        field.secret,
        Cell(field.status, _STATUS_STYLE.get(field.status, ("dim",))),
        short_version(field.version) if field.winner == "vault" else "-",
        Cell(source, ("cyan",) if source == "vault" else ()),
        _shown_value(_value_at(settings, field.field)),
    ]


def _value_at(settings: BaseSettings, dotted: str) -> object:
    value: object = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _secret(settings: BaseSettings) -> str | None:
    """The rotated secret's value, for comparison only (never printed)."""
    value = _value_at(settings, "database.password")
    return value.get_secret_value() if isinstance(value, SecretStr) else None


def _shown_value(value: object) -> str:
    """How a value is shown: secrets masked whatever their content, the rest as JSON-ish text."""
    if isinstance(value, SecretStr | SecretBytes):
        return MASK
    if isinstance(value, BaseModel):
        return "{...}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


async def _next_change(changes: AsyncIterator[ChangeEvent], timeout: float) -> ChangeEvent | None:
    try:
        async with asyncio.timeout(timeout):
            return await anext(changes)
    except (TimeoutError, StopAsyncIteration):
        return None


# -- process state, restored afterwards --------------------------------------------------------


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables the user has not set themselves, and remove them afterwards."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.INFO)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _captured_logs() -> Iterator[list[logging.LogRecord]]:
    """Collect the ``kvconfig`` logger's INFO+ records, to show them in the demo's output."""
    logger = logging.getLogger("kvconfig")
    records: list[logging.LogRecord] = []
    handler = _ListHandler(records)
    previous = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _seed(emu: KeyVaultEmulator) -> None:
    now = datetime.now(UTC)
    # The service's secrets were set up weeks ago, as in a real vault. (Secrets written within
    # the last second or two are re-read by the first refreshes: Key Vault's `updated` times
    # have one-second resolution, so kvconfig cannot yet tell them from a later rotation.)
    created = now - timedelta(days=30)
    special = {"signing-key", "legacy-token"}
    emu.seed({k: v for k, v in DEMO_SECRETS.items() if k not in special}, created=created)
    emu.set_secret("legacy-token", DEMO_SECRETS["legacy-token"], enabled=False, created=created)
    emu.set_secret(
        "signing-key",
        DEMO_SECRETS["signing-key"],
        expires_on=now - timedelta(days=2),
        created=created,
    )
