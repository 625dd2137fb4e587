"""Secret-leak canary: no secret value ever shows up where people look.

Every secret value written here is ``CANARY-<uuid hex>...`` (see ``_library.canary``). While the
library goes through its success and failure paths, everything an operator could see is scanned
for the marker and for each canary's hex part:

- every log record of the ``kvconfig``, ``azure`` and ``aiohttp`` loggers at DEBUG (formatted
  message, exception text and stack);
- every exception kvconfig raises (message, repr, ``errors``, formatted traceback with chained
  exceptions): validation failure with a bad value, missing required, 403, 401 with a wrong
  credential, unavailable, an invalid rotated value on refresh, ClosedError, a Key Vault
  reference that does not resolve (missing, disabled), a secret missing from every vault;
- the repr and str of kvconfig objects (``KeyVault``, ``LiveSettings``, ``ChangeEvent``,
  ``SecretChange``, ``Health``, ``FetchedSecret``, plans, errors) and of the Settings instances
  (``SecretStr`` fields, their ``model_dump`` and JSON);
- every change event (stream and callback);
- the output of ``kvconfig demo`` and ``kvconfig explain`` run as subprocesses with ``-vv
  --debug`` (explain against a CLI emulator seeded with canary values; the demo seeds its own
  made-up values, which are scanned for instead);
- the CLI's one-line error for exceptions that are not kvconfig's (a user validator or a module
  quoting a value): type only, never the message;
- the FastAPI integration's ``/health`` answers and log lines;
- every OpenTelemetry span and metric point exported (secret names opted in).

The Azure SDK logs request and response *bodies* only with ``logging_enable=True``; kvconfig never
passes it, and :func:`test_kvconfig_client_never_enables_body_logging` checks the pipeline it
builds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from _emulator_cli import EmulatorProcess, child_env
from _figures import record
from _library import CANARY_PREFIX, canary, make_vault
from azure.core.pipeline.policies import HttpLoggingPolicy, NetworkTraceLoggingPolicy
from pydantic import BaseModel, Field, Json, SecretStr
from pydantic_settings import BaseSettings

from kvconfig import (
    ChangeEvent,
    ClosedError,
    KeyVaultReferenceError,
    MalformedResponseError,
    MissingSettingError,
    Secret,
    SettingsValidationError,
    VaultAuthenticationError,
    VaultPermissionError,
    VaultUnavailableError,
)
from kvconfig.emulator import CertificateAuthority, KeyVaultEmulator

LOGGERS = ("kvconfig", "azure", "aiohttp")


class Scanner:
    """Collects every string an operator could see and finds canaries in them."""

    def __init__(self) -> None:
        self.canaries: set[str] = set()
        self.texts: list[tuple[str, str]] = []
        self.records = 0

    def secret(self, suffix: str = "") -> str:
        value = canary(suffix)
        self.canaries.add(value)
        return value

    def add(self, label: str, *things: object) -> None:
        for thing in things:
            self.texts.append((label, thing if isinstance(thing, str) else repr(thing)))
            if not isinstance(thing, str):
                self.texts.append((f"{label} (str)", str(thing)))

    def add_error(self, label: str, exc: BaseException) -> None:
        self.add(label, exc, getattr(exc, "errors", ""))
        self.add(f"{label} traceback", "".join(traceback.format_exception(exc)))
        for held in _chain(exc)[1:]:  # what it keeps, even if tracebacks do not show it
            self.add(f"{label} keeps {type(held).__name__}", held, held.args)
            self.add(f"{label} keeps {type(held).__name__}.doc", str(getattr(held, "doc", "")))

    def leaks(self) -> list[str]:
        needles = [CANARY_PREFIX] + [c.removeprefix(CANARY_PREFIX)[:32] for c in self.canaries]
        found = []
        for label, text in self.texts:
            for needle in needles:
                if needle in text:
                    at = text.index(needle)
                    found.append(f"{label}: ...{text[max(0, at - 80) : at + 60]!r}...")
                    break
        return found


class Capture(logging.Handler):
    """Every record of the watched loggers, formatted as a handler would write it."""

    def __init__(self, scanner: Scanner) -> None:
        super().__init__(logging.DEBUG)
        self.scanner = scanner
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.scanner.records += 1
        self.scanner.add(f"log {record.name}", self.format(record))


@pytest.fixture
def scanner() -> Iterator[Scanner]:
    scan = Scanner()
    handler = Capture(scan)
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        yield scan
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


class Database(BaseModel):
    host: SecretStr
    password: SecretStr


class AppSettings(BaseSettings):
    api_key: SecretStr
    database: Database
    tokens: dict[str, SecretStr]
    signing_key: Annotated[SecretStr, Secret("signing-key-v2"), Field(min_length=40)]
    port: int = 8080


class OneSecret(BaseSettings):
    api_key: SecretStr


class Required(BaseSettings):
    api_key: SecretStr
    never_set: SecretStr


async def _expect(scanner: Scanner, label: str, error: type[BaseException], coro: Any) -> None:
    with pytest.raises(error) as caught:
        await coro
    scanner.add_error(label, caught.value)


async def test_no_value_leaks_from_the_library(
    keyvault_emulator: KeyVaultEmulator,
    keyvault_ca: CertificateAuthority,
    scanner: Scanner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = keyvault_emulator
    s = scanner.secret
    emu.seed(
        {
            "api-key": s(),
            "database--host": s("host"),
            "database--password": s("pw"),
            "tokens": f'{{"a": "{s()}", "b": "{s()}"}}',
            "signing-key-v2": s("signing"),
            "port": "8080",  # an int cannot carry a canary; its invalid rotations do
        }
    )
    events: list[ChangeEvent] = []
    refresh_errors: list[Exception] = []

    async with make_vault(emu, ttl=0) as vault:
        # A successful load and everything it leaves behind.
        settings = await vault.load(AppSettings)
        assert settings.api_key.get_secret_value().startswith(CANARY_PREFIX)
        plan = vault.plan(AppSettings)
        scanner.add("settings", settings, settings.model_dump(), settings.model_dump_json())
        scanner.add("settings fields", settings.api_key, settings.database, settings.tokens)
        scanner.add("vault", vault, plan, *plan.secrets, *plan.refs)
        fetcher = vault._fetcher
        assert fetcher is not None
        scanner.add("fetcher", fetcher, fetcher.cache)

        # Live settings: a valid rotation, an invalid one, an outage, events, health.
        async with vault.watch(
            AppSettings,
            interval=60,
            on_change=events.append,
            on_refresh_error=refresh_errors.append,
        ) as live:
            stream = live.changes()
            emu.set_secret("api-key", s("rotated"))
            event = await live.refresh()
            assert event is not None and event.fields == ("api_key",)
            scanner.add("event", event, *event.secrets, await anext(stream))
            # One invalid rotation beside a valid one: the valid one is published, health is
            # degraded and names the rejected secret.
            emu.set_secret("api-key", s("rotated-again"))
            emu.set_secret("port", s("partial-bad"))
            event = await live.refresh()
            assert event is not None and event.fields == ("api_key",)
            health = live.health
            assert health.degraded
            scanner.add("degraded health", event, health, *health.issues, health.last_error)
            emu.set_secret("port", s("not-an-int"))  # does not validate: never published
            await _expect(scanner, "refresh invalid", SettingsValidationError, live.refresh())
            emu.set_secret("port", "8081")
            await live.refresh()  # published alone, or it would be published beside the next
            emu.set_secret("signing-key-v2", s())  # too short for min_length=40 with no suffix
            await _expect(scanner, "refresh too short", SettingsValidationError, live.refresh())
            emu.set_secret("signing-key-v2", s("signing-again"))
            emu.faults.outage(True)
            await _expect(scanner, "refresh outage", VaultUnavailableError, live.refresh())
            emu.faults.clear()
            await live.refresh()
            async with asyncio.timeout(5):  # callbacks run on the dispatcher, after refresh()
                while len(events) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
            async with asyncio.timeout(5):  # on_refresh_error runs on the dispatcher too
                while len(refresh_errors) < 4:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
            for error in refresh_errors:
                scanner.add_error("on_refresh_error", error)
            scanner.add("live", live, live.health, live.current, live._detector)
            scanner.add("held", *(live._detector.held.values() if live._detector else ()))
        scanner.add("events", *events)

        # Load failures.
        await _expect(scanner, "missing", MissingSettingError, vault.load(Required))
        emu.set_secret("port", s("bad-port"))
        await _expect(scanner, "bad value", SettingsValidationError, vault.load(AppSettings))
        emu.set_secret("port", "8082")
        emu.set_secret("tokens", f'{{"a": "{s()}", "b": 1}}')
        await _expect(scanner, "bad json item", SettingsValidationError, vault.load(AppSettings))
        emu.set_secret("tokens", f'{{"a": "{s()}"')
        await _expect(scanner, "broken json", SettingsValidationError, vault.load(AppSettings))
        emu.set_secret("tokens", f'{{"a": "{s()}"}}')
        emu.faults.fail_next(1, status=403)
        await _expect(scanner, "403", VaultPermissionError, vault.load(AppSettings))
        # A refused token on the direct path: its 401 is replayed to the challenge policy.
        await vault.load(OneSecret)
        emu.faults.fail_next(2, status=401)
        await _expect(scanner, "401 direct", VaultAuthenticationError, vault.load(OneSecret))

    # An SDK outside the tested range: the full SDK pipeline, and the DEBUG line saying so.
    monkeypatch.setattr("kvconfig._client._TRIMMED_SDK_VERSIONS", ((0, 0), (0, 1)))
    async with make_vault(emu, ttl=0) as vault:
        scanner.add("fallback settings", await vault.load(AppSettings))
    monkeypatch.undo()

    async with make_vault(emu, startup_timeout=0.3) as vault:
        emu.faults.outage(True)
        await _expect(scanner, "unavailable", VaultUnavailableError, vault.load(AppSettings))
        emu.faults.clear()
    await _expect(scanner, "closed", ClosedError, vault.load(AppSettings))

    # 401: a token from another emulator (its own signing key) is refused.
    async with (
        KeyVaultEmulator(ca=keyvault_ca) as other,
        make_vault(emu, credential=other.credential()) as vault,
    ):
        await _expect(scanner, "401", VaultAuthenticationError, vault.load(AppSettings))

    leaks = scanner.leaks()
    record("library.leaks.log_records_scanned", scanner.records)
    record("library.leaks.strings_scanned", len(scanner.texts))
    record("library.leaks.found", len(leaks), target="0")
    assert scanner.records > 50, "the loggers captured nothing"
    assert [e.fields for e in events] == [
        ("api_key",),
        ("api_key",),  # beside the rejected port
        ("port",),
        ("signing_key",),
    ]
    assert leaks == [], "\n".join(leaks[:10])


class MultiVault(BaseSettings):
    api_key: SecretStr  # primary, through the prefix chain
    queue: SecretStr  # a fallback vault
    partner: Annotated[SecretStr, Secret(vault="shared")]
    database: Annotated[Database, Secret(vault="shared")]
    referenced: SecretStr = SecretStr("unset")


async def test_no_value_leaks_from_several_vaults_and_references(
    keyvault_emulator: KeyVaultEmulator, scanner: Scanner
) -> None:
    emu = keyvault_emulator
    s = scanner.secret
    shared = await emu.add_vault("shared")
    legacy = await emu.add_vault("legacy")
    emu.seed({"api-key": s()})
    emu.seed(
        {"partner": s(), "database--host": s(), "database--password": s(), "ref": s()}, "shared"
    )
    emu.seed({"queue": s()}, "legacy")
    emu.set_secret("off", s(), "legacy", enabled=False)
    ref = f"@Microsoft.KeyVault(SecretUri={shared}/secrets/ref)"
    async with make_vault(
        emu, vaults={"shared": shared}, fallback_vaults=[legacy], prefix=("stg-", ""), ttl=0
    ) as vault:
        settings = await vault.load(MultiVault, referenced=ref)
        assert settings.referenced.get_secret_value().startswith(CANARY_PREFIX)
        plan = vault.plan(MultiVault)
        scanner.add("multi settings", settings, settings.model_dump(), settings.model_dump_json())
        scanner.add("multi plan", vault, plan, *plan.secrets)
        async with vault.watch(MultiVault, interval=60, referenced=ref) as live:
            emu.set_secret("partner", s("rotated"), "shared")
            emu.set_secret("ref", s("rotated"), "shared")
            event = await live.refresh()
            assert event is not None and set(event.fields) == {"partner", "referenced"}
            scanner.add("multi live", live, live.health, live.current, event, *event.secrets)
            scanner.add("multi held", *(live._detector.held.values() if live._detector else ()))
        await _expect(
            scanner,
            "reference 404",
            KeyVaultReferenceError,
            vault.load(MultiVault, referenced=ref.replace("/ref)", "/nope)")),
        )
        await _expect(
            scanner,
            "reference disabled",
            KeyVaultReferenceError,
            vault.load(
                MultiVault, referenced=f"@Microsoft.KeyVault(SecretUri={legacy}/secrets/off)"
            ),
        )
        emu.delete_secret("queue", "legacy")
        await _expect(scanner, "multi missing", MissingSettingError, vault.load(MultiVault))
    # kvconfig explain across the three vaults, a reference in the environment.
    from kvconfig._cli._render import Style, render_report
    from kvconfig._report import explain

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFERENCED", ref)
        report = await explain(
            MultiVault,
            vault_url=emu.vault_url,
            credential=emu.credential(),
            ca_file=emu.ca_file,
            prefix=("stg-", ""),
            vaults={"shared": shared},
            fallback_vaults=[legacy],
        )
    scanner.add("multi explain", render_report(report, Style(False)), str(report.to_json()))
    leaks = scanner.leaks()
    assert scanner.records > 10, "the loggers captured nothing"
    assert leaks == [], "\n".join(leaks[:10])


async def test_no_value_leaks_from_push_refresh(
    keyvault_emulator: KeyVaultEmulator, scanner: Scanner
) -> None:
    """Event Grid events, the emulator's delivery log, the endpoints and PushScheduler (its
    logs, health records, a failing re-read whose exception quotes a value) carry no value."""
    import datetime as dt

    import aiohttp
    from aiohttp import web

    from kvconfig._refresh._push import PushScheduler, parse_events
    from kvconfig.integrations.eventgrid import aiohttp_handler

    emu = keyvault_emulator
    s = scanner.secret
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    emu.seed({"api-key": s(), "db-password": s()})
    bodies: list[bytes] = []
    held: dict[str, str] = {"api-key": "", "db-password": ""}
    done = asyncio.Event()

    async with emu.secret_client() as client:

        async def reread(names: set[str]) -> None:
            try:
                for name in names:
                    secret = await client.get_secret(name)
                    if name == "db-password":  # an error quoting the value, as a body would
                        raise RuntimeError(f"bad value {secret.value}")
                    held[name] = secret.properties.version or ""
            finally:
                done.set()

        scheduler = PushScheduler(
            emu.vault_url, tracked=held.get, reread=reread, notify_max_delay=0
        )

        class Tap:
            def notify(self, events: object) -> None:
                scanner.add("parsed events", events)

        async def capture(request: web.Request) -> web.StreamResponse:
            bodies.append(await request.read())
            return await handler(request)

        handler = aiohttp_handler([scheduler, Tap()], secret="delivery-secret")
        app = web.Application()
        app.router.add_route("*", "/events", capture)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/events"
        try:
            async with scheduler:
                for schema in ("eventgrid", "cloudevents"):
                    await emu.subscribe(url, schema=schema, secret="delivery-secret")
                await client.set_secret("api-key", s("rotated"))
                emu.set_secret("db-password", s("rotated"), expires_on=past)
                emu.scan_expiry()
                await emu.events_idle()
                await asyncio.wait_for(done.wait(), 10)
                delivered = list(bodies)
                async with aiohttp.ClientSession() as session:  # a forged body quoting a value
                    forged = f'[{{"eventType": "{s()}", "data": "{s()}"'
                    async with session.post(url + "?code=delivery-secret", data=forged) as r:
                        scanner.add("endpoint 400", await r.text())
                with pytest.raises(Exception) as caught:
                    parse_events(forged)
                scanner.add_error("parse error", caught.value)
                scanner.add("scheduler", scheduler, scheduler.expiry, scheduler.last_reread_error)
        finally:
            await runner.cleanup()
    scanner.add("delivered bodies", *(b.decode() for b in delivered))
    scanner.add("deliveries", *emu.deliveries, emu.events.subscriptions)
    assert len(delivered) >= 8  # 2 handshakes + 3 events x 2 schemas
    assert scheduler.reread_failures >= 1 and "db-password" in scheduler.expiry
    leaks = scanner.leaks()
    assert leaks == [], "\n".join(leaks[:10])


class Quota(BaseModel):
    limit: int


class Keyed(BaseSettings):
    """Dict keys are part of the value: pydantic puts them in error locations (issue 9 item 1)."""

    quotas: dict[str, int] = {}
    plans: dict[str, Quota] = {}
    raw: Json[dict[str, int]] = "{}"  # type: ignore[assignment]


async def test_no_value_leaks_through_keys_or_malformed_answers(
    keyvault_emulator: KeyVaultEmulator, scanner: Scanner
) -> None:
    """Leak paths found by review: JSON keys in error locations (load, refresh, health, log)
    and 2xx answers whose body is cut short or replaced (the SDK quotes the body)."""
    emu = keyvault_emulator
    s = scanner.secret
    paths = 0
    emu.seed({"quotas": "{}", "plans": "{}", "raw": "{}"})
    async with (
        make_vault(emu, ttl=0, startup_timeout=0.5) as vault,
        vault.watch(Keyed, interval=60) as live,
    ):
        for name, bad in (
            ("quotas", f'{{"{s()}": "x"}}'),
            ("plans", f'{{"{s()}": {{"limit": "x"}}}}'),
            ("raw", f'{{"{s()}": "x"}}'),
        ):
            emu.set_secret(name, bad)
            await _expect(scanner, f"load {name}", SettingsValidationError, vault.load(Keyed))
            await _expect(scanner, f"refresh {name}", SettingsValidationError, live.refresh())
            scanner.add(f"health {name}", live.health, live.health.last_error)
            emu.set_secret(name, "{}")
            await live.refresh()
            paths += 4
        emu.set_secret("quotas", f'{{"{s()}": 1}}')
        await live.refresh()  # a valid value whose keys are secret: the event names fields
        for how in ("truncate", "html"):
            emu.set_secret("quotas", f'{{"{s()}": 2}}')
            emu.faults.garble_next(1000, how)  # type: ignore[arg-type]
            await _expect(scanner, f"load {how}", MalformedResponseError, vault.load(Keyed))
            await _expect(scanner, f"refresh {how}", VaultUnavailableError, live.refresh())
            scanner.add(f"health {how}", live.health)
            emu.faults.clear()
            emu.faults.garble_next(1, how)  # once: retried within the deadline
            await vault.load(Keyed)
            await live.refresh()
            paths += 4
    leaks = scanner.leaks()
    record("library.leaks.review_paths_tried", paths)
    record("library.leaks.review_strings_scanned", len(scanner.texts))
    record("library.leaks.review_found", len(leaks), target="0")
    assert leaks == [], "\n".join(leaks[:10])


async def test_no_value_leaks_from_the_host_share(
    keyvault_emulator: KeyVaultEmulator, scanner: Scanner, tmp_path: Path
) -> None:
    """shared_dir: the notice file, the shares' reprs, notices and every log line (including
    the warnings for untrustworthy files) carry names, versions and times only."""
    from kvconfig._refresh._hostshare import HostShare

    emu = keyvault_emulator
    s = scanner.secret
    emu.seed({"api-key": s(), "database--host": s("host"), "database--password": s("pw")})
    emu.seed({"tokens": f'{{"a": "{s()}"}}', "signing-key-v2": s("signing")})
    shared = tmp_path / "shared"
    async with (
        make_vault(emu, ttl=0) as vault,
        vault.watch(AppSettings, interval=60) as live,
        HostShare(shared, "leak-test", interval=0.1) as leader,
        HostShare(shared, "leak-test", interval=0.1) as follower,
    ):
        emu.set_secret("api-key", s("rotated"))
        event = await live.refresh()
        assert event is not None and event.secrets
        await leader.publish(event.secrets)  # the real SecretChange objects of a refresh
        notices = follower.poll_notices()
        assert notices is not None and [n.name for n in notices] == ["api-key"]
        scanner.add("hostshare", leader, follower, *notices)
        scanner.add("notice file", leader.notice_path.read_text())
        leader.notice_path.write_text(f"corrupt {s()}")  # a file holding junk: never echoed
        assert await follower.poll() is None
        await leader.publish(())
        assert await follower.poll() == set()
    leaks = scanner.leaks()
    record("library.leaks.hostshare_found", len(leaks), target="0")
    assert scanner.records > 0, "the loggers captured nothing"
    assert leaks == [], "\n".join(leaks[:10])


class LoopBoundCredential:
    """The emulator's credential until ``ended``; then it fails as an ``azure.identity.aio``
    credential does once the event loop it first ran on has closed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.ended = False

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        if self.ended:
            raise RuntimeError("Event loop is closed")
        return await self._inner.get_token(*scopes, **kwargs)

    async def close(self) -> None:
        await self._inner.close()


async def test_no_value_leaks_from_credential_challenges(
    keyvault_emulator: KeyVaultEmulator, scanner: Scanner
) -> None:
    """A CAE claims challenge answered with a new token, then one the credential cannot answer
    (bound to an ended loop): logs and the error name the vault and the credential's type."""
    emu = keyvault_emulator
    emu.seed({"api-key": scanner.secret()})
    credential = LoopBoundCredential(emu.credential())
    async with make_vault(emu, credential=credential, ttl=0) as vault:
        await vault.load(OneSecret)
        emu.faults.claims_challenge()
        scanner.add("after a claims challenge", await vault.load(OneSecret))
        credential.ended = True
        emu.faults.claims_challenge()
        await _expect(
            scanner,
            "credential bound to an ended loop",
            VaultAuthenticationError,
            vault.load(OneSecret),
        )
    leaks = scanner.leaks()
    assert scanner.records > 0, "the loggers captured nothing"
    assert leaks == [], "\n".join(leaks[:10])


async def test_no_value_leaks_from_live_notify_health_and_shared_dir(
    keyvault_emulator: KeyVaultEmulator, scanner: Scanner, tmp_path: Path
) -> None:
    """LiveSettings.notify() (forged bodies, a re-read of an invalid value, expiry events),
    health with its push/shared_dir fields, and two watchers sharing a directory (the notice
    file, the follower's targeted re-read, every log line) carry no value."""
    import datetime as dt

    from kvconfig import EventFormatError

    emu = keyvault_emulator
    s = scanner.secret
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    emu.seed({"api-key": s(), "database--host": s("host"), "database--password": s("pw")})
    emu.seed({"tokens": f'{{"a": "{s()}"}}', "signing-key-v2": s("signing-key-long-enough")})
    emu.set_secret("api-key", s("expiring"), expires_on=soon)
    shared = tmp_path / "shared"

    def ev(name: str, version: str, kind: str = "NewVersionCreated") -> dict[str, Any]:
        return {
            "eventType": f"Microsoft.KeyVault.Secret{kind}",
            "subject": name,
            "data": {"Id": f"{emu.vault_url}/secrets/{name}/{version}", "ObjectName": name},
        }

    async def until(check: Any) -> None:
        async with asyncio.timeout(20):
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    async with (
        make_vault(emu, ttl=0) as vault,
        vault.watch(AppSettings, interval=0.2, notify_max_delay=0, shared_dir=shared) as a,
        vault.watch(AppSettings, interval=0.2, notify_max_delay=0, shared_dir=shared) as b,
    ):
        roles = {a.health.shared_role, b.health.shared_role}
        assert roles == {"leader", "follower"}, roles
        for forged in (f"[{{'{s()}'", [{"eventType": 1, "data": s()}], [s()]):
            with pytest.raises(EventFormatError) as caught:
                a.notify(forged)
            scanner.add_error("notify format error", caught.value)
        scanner.add("notify ignored", a.notify([{"eventType": s(), "data": {"x": s()}}]))
        bad = emu.set_secret("tokens", f'{{"a": ["{s()}"]}}')  # does not validate: not published
        scanner.add("notify result", a.notify([ev("tokens", bad)]))
        await until(lambda: a.health.degraded)
        a.notify([ev("api-key", "", "NearExpiry")])
        await until(lambda: a.health.near_expiry == ("api-key",))
        emu.set_secret("tokens", f'{{"a": "{s()}"}}')
        emu.set_secret("api-key", s("rotated"))
        await until(lambda: a.generation >= 1 and b.generation >= 1)
        for live in (a, b):
            scanner.add("live", live, live.health, live.health.last_error, *live._pushes.values())
        scanner.add("shared dir", *(p.read_text() for p in shared.iterdir()))
    leaks = scanner.leaks()
    record("library.leaks.live_push_share_found", len(leaks), target="0")
    assert scanner.records > 0, "the loggers captured nothing"
    assert leaks == [], "\n".join(leaks[:10])


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and every one it keeps (cause and context, even when suppressed)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is e for e in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__]
    return seen


@pytest.mark.parametrize(
    "secrets",
    [
        {"port": "{c}"},  # pydantic's ValidationError quotes the input
        {"port": "1", "limits": "{{not json {c}"},  # JSONDecodeError.doc is the input
        {"port": "1", "limits": '{{"a": "{c}"}}'},
    ],
)
async def test_errors_keep_no_exception_holding_the_value(
    keyvault_emulator: KeyVaultEmulator, secrets: dict[str, str]
) -> None:
    """``raise ... from None`` only hides the original from tracebacks: ``__context__`` would
    still hold pydantic's error (whose message quotes the input) for any code that walks it."""

    class Typed(BaseSettings):
        port: int
        limits: dict[str, int] = {}

    value = canary()
    keyvault_emulator.seed({k: v.format(c=value) for k, v in secrets.items()})
    async with make_vault(keyvault_emulator) as vault:
        with pytest.raises(SettingsValidationError) as caught:
            await vault.load(Typed)
    for exc in _chain(caught.value):
        held = f"{exc}{exc!r}{exc.args!r}{getattr(exc, 'doc', '')}"
        assert CANARY_PREFIX not in held, f"{type(exc).__name__} in the chain holds the value"


def test_the_scanner_finds_what_pydantic_itself_would_leak() -> None:
    """The scan can fail: pydantic's own ValidationError quotes the input; kvconfig's must not."""
    scanner = Scanner()
    value = scanner.secret("x")

    class Port(BaseModel):
        port: int

    try:
        Port.model_validate({"port": value})
    except Exception as exc:
        scanner.add_error("pydantic", exc)
    scanner.add("masked", SecretStr(value))
    leaks = scanner.leaks()
    assert {leak.split(":")[0] for leak in leaks} == {
        "pydantic",
        "pydantic (str)",
        "pydantic traceback",
    }
    # ... and the SecretStr is masked.


def test_kvconfig_client_never_enables_body_logging() -> None:
    """The SDK logs bodies (secret values) only with ``logging_enable``; kvconfig's client has it
    off, and its header logger redacts Authorization."""

    async def build() -> tuple[object, object]:
        emu = KeyVaultEmulator(ca=CertificateAuthority.generate())
        async with emu, make_vault(emu) as vault:
            vault._open()
            assert vault._client is not None
            config = vault._client._client._config
            return config.logging_policy, config.http_logging_policy

    trace, http = asyncio.run(build())
    assert isinstance(trace, NetworkTraceLoggingPolicy) and not trace.enable_http_logger
    assert isinstance(http, HttpLoggingPolicy)
    assert "authorization" not in {h.lower() for h in http.allowed_header_names}


def test_trimmed_pipeline_has_no_logging_policy_and_raw_reads_hold_no_value() -> None:
    """kvconfig's own pipeline (``_client.pipeline_policies``) logs nothing; the raw reader's
    error for a body it cannot parse holds no part of the body, directly or chained."""
    from kvconfig._client import pipeline_policies
    from kvconfig._rawget import _PlainResponse, _result

    policies = pipeline_policies(object(), verify_challenge_resource=True)  # type: ignore[arg-type]
    assert policies is not None
    assert not [p for p in policies if "Logging" in type(p).__name__]
    value = canary()
    for body in (f"not json {value}", f'{{"value": ["{value}"]}}', f'["{value}"]'):
        with pytest.raises(Exception) as caught:
            _result("s", _PlainResponse(200, "OK", {}, body.encode()))  # type: ignore[arg-type]
        for exc in _chain(caught.value):
            held = f"{exc}{exc!r}{exc.args!r}{getattr(exc, 'doc', '')}"
            assert CANARY_PREFIX not in held, f"{type(exc).__name__} holds the value"


def _scan_cli(scanner: Scanner, label: str, result: subprocess.CompletedProcess[str]) -> None:
    scanner.add(f"{label} stdout", result.stdout)
    scanner.add(f"{label} stderr", result.stderr)


def _kvconfig(*args: str, env: dict[str, str], cwd: Path | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "kvconfig", "-vv", "--debug", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


GOOD = """
from typing import Annotated
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings
from kvconfig import Secret

class Database(BaseModel):
    password: SecretStr

class Settings(BaseSettings):
    api_key: SecretStr
    database: Database
    signing: Annotated[SecretStr, Secret("signing-key")]
"""

BAD = """
from pydantic import SecretStr
from pydantic_settings import BaseSettings

class Settings(BaseSettings):
    api_key: SecretStr
    port: int
    limits: dict[str, int]
    never_set: SecretStr
"""


@pytest.mark.slow
def test_no_value_leaks_from_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvconfig._cli._demo import DEMO_SECRETS, ROTATED_PASSWORD

    scanner = Scanner()
    emulator = EmulatorProcess()
    try:
        env = emulator.wait_ready()
        values = {
            "api-key": scanner.secret(),
            "database--password": scanner.secret(),
            "signing-key": scanner.secret(),
            "port": scanner.secret("port"),
            "limits": f'{{"a": "{scanner.secret()}"}}',
        }
        _seed_over_sdk(env, values, monkeypatch)
        (tmp_path / "good_settings.py").write_text(textwrap.dedent(GOOD))
        (tmp_path / "bad_settings.py").write_text(textwrap.dedent(BAD))
        cli_env = child_env(env)
        good = _kvconfig("explain", "good_settings:Settings", env=cli_env, cwd=tmp_path)
        bad = _kvconfig("explain", "bad_settings:Settings", env=cli_env, cwd=tmp_path)
        as_json = _kvconfig("explain", "bad_settings:Settings", "--json", env=cli_env, cwd=tmp_path)
    finally:
        emulator.stop()
    assert good.returncode == 0, good.stderr
    assert bad.returncode == 1, bad.stderr
    for label, result in (("explain good", good), ("explain bad", bad), ("explain json", as_json)):
        _scan_cli(scanner, label, result)

    demo = _kvconfig("demo", "--latency-ms", "0", "--interval", "0.1", env=child_env())
    assert demo.returncode == 0, demo.stderr
    _scan_cli(scanner, "demo", demo)
    public = {"database--host", "feature-flags"}  # not secret fields in the demo class
    demo_values = [v for k, v in DEMO_SECRETS.items() if k not in public] + [ROTATED_PASSWORD]
    demo_leaks = [
        f"{label}: {value}"
        for label, text in scanner.texts
        for value in demo_values
        if value in text
    ]

    leaks = scanner.leaks() + demo_leaks
    lines = sum(text.count("\n") + 1 for _, text in scanner.texts)
    record("library.leaks.cli_output_lines_scanned", lines)
    record("library.leaks.cli_found", len(leaks), target="0")
    assert "api-key" in good.stdout and "port" in bad.stdout
    assert leaks == [], "\n".join(leaks[:10])


def _seed_over_sdk(env: dict[str, str], values: dict[str, str], mp: pytest.MonkeyPatch) -> None:
    """Seed the CLI emulator as an operator would: the sync SDK with the managed identity the
    emulator exports (done before anything is scanned: this is not kvconfig's code)."""
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    for key in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
        mp.setenv(key, env[key])
    with (
        ManagedIdentityCredential() as credential,
        SecretClient(
            env["VAULT_URL"],
            credential,
            verify_challenge_resource=False,
            connection_verify=env["SSL_CERT_FILE"],
        ) as client,
    ):
        for name, value in values.items():
            client.set_secret(name, value)


async def test_no_value_or_token_in_the_emulator_request_log(
    scanner: Scanner, keyvault_ca: CertificateAuthority
) -> None:
    """``kvconfig emulator --log-requests`` lines (the formatter the CLI prints): method, path,
    status, time; never a body, a query or a token."""
    from kvconfig.emulator._cli import format_request

    lines: list[str] = []
    async with KeyVaultEmulator(
        ca=keyvault_ca, request_logger=lambda r: lines.append(format_request(r))
    ) as emu:
        value = scanner.secret("request-log")
        async with emu.secret_client() as client:
            await client.set_secret("logged", value)
            assert (await client.get_secret("logged")).value == value
            async for _ in client.list_properties_of_secret_versions("logged"):
                pass
        async with emu.credential() as credential:
            token = (await credential.get_token("https://vault.azure.net/.default")).token
    scanner.add("emulator request log", "\n".join(lines))
    assert len(lines) >= 4 and all(token not in line and "kvemu." not in line for line in lines)
    leaks = scanner.leaks()
    assert leaks == [], "\n".join(leaks[:10])


def test_no_value_leaks_from_the_sync_api_and_the_dropin(scanner: Scanner) -> None:
    from pydantic_settings import PydanticBaseSettingsSource

    from kvconfig import AzureKeyVaultSettingsSource, SyncKeyVault
    from kvconfig.emulator import EmulatorThread

    class Flat(BaseSettings):
        api_key: SecretStr
        database: Database

    s = scanner.secret
    with EmulatorThread() as emu:
        emu.seed({"api-key": s(), "database--host": s("host"), "database--password": s("pw")})
        events: list[ChangeEvent] = []
        with SyncKeyVault(emu.vault_url, emu.sync_credential(), ca_file=emu.ca_file) as vault:
            settings = vault.load(Flat)
            live = vault.watch(Flat, on_change=events.append)
            emu.set_secret("api-key", s("rotated"))
            scanner.add("sync", vault, settings, live, live.refresh(), live.health, live.current)
            live.close()
            scanner.add("sync events", *events)
            with pytest.raises(MissingSettingError) as caught:
                vault.load(Required)
            scanner.add_error("sync missing", caught.value)

        sources: list[PydanticBaseSettingsSource] = []

        class Dropin(Flat):
            @classmethod
            def settings_customise_sources(
                cls,
                settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                source = AzureKeyVaultSettingsSource(
                    settings_cls,
                    emu.vault_url,
                    emu.sync_credential(),
                    dash_to_underscore=True,
                    ca_file=emu.ca_file,
                    startup_timeout=0.3,
                )
                sources.append(source)
                return (init_settings, source)

        dropped = Dropin()
        assert dropped.api_key.get_secret_value().startswith(CANARY_PREFIX)
        source = sources[0]
        assert isinstance(source, AzureKeyVaultSettingsSource)
        scanner.add("dropin", dropped, source, source.env_vars)
        # Fields supplied by init kwargs are skipped (the INFO line counts them; the DEBUG line
        # says when nothing is left to read): neither shows a value.
        partly = Dropin(api_key=s("init"))
        fully = Dropin(api_key=s("init"), database={"host": s("h"), "password": s("p")})
        scanner.add("dropin supplied", partly, fully, sources[-2].env_vars, sources[-1].env_vars)
        emu.faults.fail_next(1, status=403)
        with pytest.raises(VaultPermissionError) as refused:
            Dropin()
        scanner.add_error("dropin 403", refused.value)
    leaks = scanner.leaks()
    assert scanner.records > 5, "the loggers captured nothing"
    assert leaks == [], "\n".join(leaks[:10])


RAISES_WITH_VALUE = """
from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings

class Settings(BaseSettings):
    api_key: SecretStr

    @field_validator("api_key")
    @classmethod
    def _check(cls, value: SecretStr) -> SecretStr:
        # A user validator quoting the value in a non-ValueError: pydantic does not wrap it.
        raise RuntimeError(f"rejected key {value.get_secret_value()}")
"""


def test_cli_prints_only_kvconfig_messages(
    keyvault_emulator_sync: KeyVaultEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 9 item 3: any exception that is not kvconfig's own prints its type and "use
    --debug", never its message (which may quote a value), at import time or while running."""
    from kvconfig._cli import main

    scanner = Scanner()
    emu = keyvault_emulator_sync
    emu.seed({"api-key": scanner.secret("api")})
    (tmp_path / "raises_with_value.py").write_text(textwrap.dedent(RAISES_WITH_VALUE))
    (tmp_path / "fails_at_import.py").write_text(
        f"raise RuntimeError({scanner.secret('import')!r})\n"
    )
    (tmp_path / "loads_at_import.py").write_text(
        "from pydantic_settings import BaseSettings\n"
        "class Settings(BaseSettings):\n    port: int\nsettings = Settings()\n"
    )
    monkeypatch.setenv("PORT", scanner.secret("port"))  # pydantic quotes the bad input
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KVCONFIG_DEBUG", raising=False)
    for name in [n for n in os.environ if n.startswith(("AZURE_", "MSI_"))]:
        monkeypatch.delenv(name)
    common = ["--vault-url", emu.vault_url, "--ca-file", str(emu.ca_file)]
    statuses = {}
    for module in ("raises_with_value", "fails_at_import", "loads_at_import"):
        statuses[module] = main(["explain", f"{module}:Settings", *common])
        out, err = capsys.readouterr()
        scanner.add(f"cli {module} stdout", out)
        scanner.add(f"cli {module} stderr", err)
        assert "RuntimeError" in err or "ValidationError" in err, err
        assert "--debug" in err and err.count("\n") == 1, err
    assert statuses == {"raises_with_value": 1, "fails_at_import": 2, "loads_at_import": 2}
    assert scanner.leaks() == []


class ServiceSettings(BaseSettings):
    api_key: SecretStr
    port: int = 8080


def test_no_value_leaks_from_the_fastapi_integration(
    keyvault_emulator_sync: KeyVaultEmulator, scanner: Scanner
) -> None:
    """Startup, handlers' dependency repr, /health after an invalid rotation, shutdown logs."""
    import time

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from kvconfig.integrations.fastapi import VaultSettings

    emu = keyvault_emulator_sync
    emu.seed({"api-key": scanner.secret("api"), "port": "8081"})
    vault_settings = VaultSettings(
        ServiceSettings,
        vault_url=emu.vault_url,
        credential=emu.credential,
        ca_file=emu.ca_file,
        interval=0.2,
    )
    app = FastAPI(lifespan=vault_settings.lifespan)
    app.include_router(vault_settings.health_router())
    with TestClient(app) as client:
        scanner.add("fastapi health ok", client.get("/health").text)
        emu.set_secret("port", scanner.secret("port"))  # invalid: keeps the last-known-good
        deadline = time.monotonic() + 20
        while not client.get("/health").json()["degraded"]:
            assert time.monotonic() < deadline, "did not hang"
            time.sleep(0.05)
        scanner.add("fastapi health failing", client.get("/health").text)
        scanner.add(
            "fastapi objects", vault_settings, vault_settings.live(), vault_settings.current()
        )
    scanner.add("fastapi health stopped", vault_settings.health_response().body.decode())
    assert scanner.records > 0
    assert scanner.leaks() == []


async def test_no_value_leaks_into_telemetry(
    keyvault_emulator: KeyVaultEmulator, scanner: Scanner
) -> None:
    """Every exported span and metric point, through a validation failure, a rejected rotation
    and a 403, with secret names opted in."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from kvconfig.integrations.otel import configure

    class Service(BaseSettings):
        api_key: SecretStr
        port: int = 8080

    emu = keyvault_emulator
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    configure(
        tracer_provider=tracer_provider, meter_provider=meter_provider, record_secret_names=True
    )
    try:
        emu.seed({"api-key": scanner.secret("api"), "port": scanner.secret("port")})
        async with make_vault(emu) as vault:
            with pytest.raises(SettingsValidationError):
                await vault.load(Service)
        emu.set_secret("port", "8081")
        async with make_vault(emu) as vault, vault.watch(Service, interval=3600) as live:
            emu.set_secret("port", scanner.secret("rotated"))
            with pytest.raises(SettingsValidationError):
                await live.refresh()
            metrics = reader.get_metrics_data()
        async with make_vault(emu) as vault:
            emu.faults.fail_next(1, status=403)
            with pytest.raises(VaultPermissionError):
                await vault.load(Service)
    finally:
        configure()
        meter_provider.shutdown()
        tracer_provider.shutdown()
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} == {"kvconfig.load", "kvconfig.refresh"}
    for span in spans:
        scanner.add(f"span {span.name}", span.to_json())
    assert metrics is not None
    scanner.add("metrics", metrics.to_json())
    assert scanner.leaks() == []
