"""parse_events and PushScheduler against the emulator's real deliveries and real SDK re-reads."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from azure.keyvault.secrets.aio import SecretClient
from push_helpers import Webhook

from kvconfig._errors import EventFormatError
from kvconfig._refresh._push import (
    SECRET_EXPIRED,
    SECRET_NEW_VERSION_CREATED,
    PushScheduler,
    SecretEvent,
    parse_events,
    vault_host,
)
from kvconfig.emulator import KeyVaultEmulator
from kvconfig.integrations.eventgrid import aiohttp_handler

VALUE = "CANARY-push-value-77d1"


class AtMax(random.Random):
    """Delay every re-read by the full notify_max_delay (deterministic tests)."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Holder:
    """What a watcher holds: name -> version, re-read with real SDK GETs."""

    def __init__(self, client: SecretClient, names: list[str]) -> None:
        self.client = client
        self.versions: dict[str, str] = dict.fromkeys(names, "")
        self.calls: list[set[str]] = []
        self.done = asyncio.Event()
        self.fail = False

    def tracked(self, name: str) -> str | None:
        return self.versions.get(name.lower())

    async def reread(self, names: set[str]) -> None:
        self.calls.append(set(names))
        try:
            if self.fail:
                raise ConnectionError(f"simulated outage {VALUE}")
            for name in names:
                secret = await self.client.get_secret(name)
                assert secret.properties.version is not None
                self.versions[name.lower()] = secret.properties.version
        finally:
            self.done.set()

    async def load(self) -> None:
        await self.reread(set(self.versions))
        self.calls.clear()
        self.done.clear()

    async def next_reread(self) -> set[str]:
        await asyncio.wait_for(self.done.wait(), 10)
        self.done.clear()
        return self.calls[-1]


def gets(emu: KeyVaultEmulator, name: str) -> int:
    return sum(1 for r in emu.requests if r.method == "GET" and r.path == f"/secrets/{name}/")


@pytest.fixture
async def client(keyvault_emulator: KeyVaultEmulator) -> AsyncIterator[SecretClient]:
    async with keyvault_emulator.secret_client() as c:
        yield c


async def _captured(emu: KeyVaultEmulator, webhook: Webhook, **options: Any) -> list[Any]:
    """Bodies the emulator really delivered for one set_secret of each of a, b (+ b again)."""
    await emu.subscribe(webhook.url, **options)
    emu.seed({"a": VALUE, "b": VALUE})
    emu.set_secret("b", VALUE)
    await emu.events_idle()
    return [d.json() for d in webhook.deliveries]


# -- parse_events -------------------------------------------------------------------------------


async def test_parses_real_eventgrid_and_cloudevents_bodies(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    emu = keyvault_emulator
    bodies = await _captured(emu, webhook, max_events_per_batch=1)
    host = vault_host(emu.vault_url)
    events = [e for body in bodies for e in parse_events(body)]
    assert [(e.name, e.vault_host, e.event_type) for e in events] == [
        ("a", host, SECRET_NEW_VERSION_CREATED),
        ("b", host, SECRET_NEW_VERSION_CREATED),
        ("b", host, SECRET_NEW_VERSION_CREATED),
    ]
    assert all(len(e.version) == 32 and e.event_id for e in events)
    # bytes and str forms of the same body parse the same
    raw = json.dumps(bodies[0])
    assert parse_events(raw) == parse_events(raw.encode()) == parse_events(bodies[0])

    await emu.unsubscribe(webhook.url)
    webhook.received.clear()
    cloud = await _captured(emu, webhook, schema="cloudevents", max_events_per_batch=5)
    batch_events = [e for body in cloud for e in parse_events(body)]
    assert [e.name for e in batch_events] == ["a", "b", "b"]
    assert {e.vault_host for e in batch_events} == {host}
    single = cloud[0][0]
    assert parse_events(single) == parse_events([single])


async def test_parses_sdk_event_objects(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    from azure.core.messaging import CloudEvent as CoreCloudEvent
    from azure.eventgrid import EventGridEvent
    from cloudevents.core.v1.event import CloudEvent as CncfCloudEvent
    from cloudevents.v1.http import CloudEvent as CncfHttpCloudEvent

    (body,) = (await _captured(keyvault_emulator, webhook))[:1]
    (expected,) = parse_events(body)
    doc = body[0]
    grid = EventGridEvent.from_dict(doc)
    cloud_doc = {
        "specversion": "1.0",
        "type": doc["eventType"],
        "source": doc["topic"],
        "subject": doc["subject"],
        "id": doc["id"],
        "data": doc["data"],
    }
    core = CoreCloudEvent.from_dict(cloud_doc)
    attrs = {k: v for k, v in cloud_doc.items() if k != "data"}
    cncf = CncfCloudEvent(attrs, doc["data"])
    cncf_http = CncfHttpCloudEvent(attrs, doc["data"])
    for obj in (grid, core, cncf, cncf_http):
        assert parse_events(obj) == [expected], type(obj)
        assert parse_events([obj, obj]) == [expected, expected]


def test_parses_the_loose_shape_of_microsofts_doc_sample() -> None:
    sample = [
        {
            "id": "00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
            "topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1",
            "subject": "newsecret",
            "eventType": "Microsoft.KeyVault.SecretNearExpiry",
            "eventTime": "2019-07-25T01:08:33.1036736Z",
            "data": {
                "Id": "https://KV1.vault.azure.net:443/secrets/newsecret/EE059B2BB5BC48398A53B168C6CDCB10",
                "vaultName": "kv1",
                "objectType": "Secret",
                "objectName ": "newsecret",
                "version": " ee059b2bb5bc48398a53b168c6cdcb10",
                "nbf": "1559081980",
                "exp": "1559082102",
            },
            "dataVersion": "1",
            "metadataVersion": "1",
        }
    ]
    (event,) = parse_events(sample)
    assert event == SecretEvent(
        "Microsoft.KeyVault.SecretNearExpiry",
        "kv1.vault.azure.net",
        "newsecret",
        "ee059b2bb5bc48398a53b168c6cdcb10",
        "00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
        1559082102,
        1559081980,
    )
    assert event.kind == "near_expiry"
    assert vault_host("https://kv1.vault.azure.net/") == event.vault_host


def test_other_event_types_are_skipped_and_garbage_refused() -> None:
    key_event = {
        "eventType": "Microsoft.KeyVault.KeyNewVersionCreated",
        "data": {"Id": "https://kv.vault.azure.net/keys/k/1"},
    }
    validation = {"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {}}
    assert parse_events([key_event, validation]) == []
    assert parse_events([]) == []
    for bad, match in [
        (b"\xff\xfe", "not UTF-8"),
        ("{not json", "not valid JSON"),
        (42, "got int"),
        ([1], "event 0 is a int"),
        ([{"data": {}}], "no eventType"),
        ([{"eventType": SECRET_NEW_VERSION_CREATED, "data": "[]"}], "data is not an object"),
        ([{"eventType": SECRET_NEW_VERSION_CREATED, "data": {"Id": ""}}], "no secret Id"),
    ]:
        with pytest.raises(EventFormatError, match=match):
            parse_events(bad)
    with pytest.raises(EventFormatError) as info:
        parse_events(f'{{"value": "{VALUE}"')
    assert VALUE not in str(info.value)


# -- PushScheduler ------------------------------------------------------------------------------


async def _serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/events", handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/events"


async def test_real_delivery_triggers_one_targeted_reread(
    keyvault_emulator: KeyVaultEmulator, client: SecretClient
) -> None:
    emu = keyvault_emulator
    emu.seed({"db-password": VALUE, "api-key": VALUE, "untracked": VALUE})
    holder = Holder(client, ["db-password", "api-key"])
    await holder.load()
    scheduler = PushScheduler(
        emu.vault_url, tracked=holder.tracked, reread=holder.reread, notify_max_delay=0.05
    )
    async with scheduler:
        runner, url = await _serve(aiohttp_handler(scheduler))
        try:
            await emu.subscribe(url)
            emu.clear_requests()
            new = emu.set_secret("db-password", "rotated")
            emu.set_secret("untracked", "rotated")
            assert await holder.next_reread() == {"db-password"}
            assert holder.versions["db-password"] == new
            await emu.events_idle()
            assert gets(emu, "db-password") == 1
            assert gets(emu, "untracked") == gets(emu, "api-key") == 0
            assert [d.outcome for d in emu.deliveries if d.kind == "events"] == ["delivered"] * 2
        finally:
            await runner.cleanup()


async def test_repeats_coalesce_into_one_reread(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook, client: SecretClient
) -> None:
    emu = keyvault_emulator
    emu.seed({"a": VALUE, "b": VALUE})
    holder = Holder(client, ["a", "b"])
    await holder.load()
    await emu.subscribe(webhook.url)
    for _ in range(3):
        emu.seed({"a": VALUE, "b": VALUE})
    await emu.events_idle()
    bodies = [d.json() for d in webhook.deliveries]
    assert len(bodies) == 6
    emu.clear_requests()
    async with PushScheduler(
        emu.vault_url,
        tracked=holder.tracked,
        reread=holder.reread,
        notify_max_delay=0.1,
        rng=AtMax(),
    ) as scheduler:
        results = [scheduler.notify(body) for body in bodies]  # six calls, one re-read
        assert results[0].scheduled == {"a"} and results[1].scheduled == {"b"}
        assert scheduler.pending == {"a", "b"}
        assert await holder.next_reread() == {"a", "b"}
        assert gets(emu, "a") == gets(emu, "b") == 1
        assert scheduler.pending == frozenset()
        # the versions now held are ignored without a request
        again = scheduler.notify(bodies[-2] + bodies[-1])
        assert again.ignored == 2 and not again.scheduled
        assert scheduler.rereads == 1


async def test_ignores_other_vaults_untracked_and_held_versions(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook, client: SecretClient
) -> None:
    emu = keyvault_emulator
    await emu.add_vault("other")
    emu.seed({"shared-name": VALUE})
    holder = Holder(client, ["shared-name"])
    await holder.load()
    await emu.subscribe(webhook.url, vault="other")
    emu.seed({"shared-name": VALUE, "x": VALUE}, vault="other")
    await emu.events_idle()
    held = holder.versions["shared-name"]
    same_version = {
        "eventType": SECRET_NEW_VERSION_CREATED,
        "data": {"Id": f"{emu.vault_url}/secrets/shared-name/{held}"},
    }
    async with PushScheduler(
        emu.vault_url, tracked=holder.tracked, reread=holder.reread, notify_max_delay=0
    ) as scheduler:
        for delivery in webhook.deliveries:
            assert scheduler.notify(delivery.body).ignored == 1
        assert scheduler.notify([same_version]).ignored == 1
        assert scheduler.pending == frozenset()
        await asyncio.sleep(0.05)
        assert holder.calls == [] and scheduler.rereads == 0


async def test_a_poll_that_got_there_first_cancels_the_reread(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook, client: SecretClient
) -> None:
    emu = keyvault_emulator
    emu.seed({"a": VALUE})
    holder = Holder(client, ["a"])
    await holder.load()
    await emu.subscribe(webhook.url)
    emu.set_secret("a", "rotated")
    await emu.events_idle()
    checked = asyncio.Event()

    def tracked(name: str) -> str | None:
        if not scheduler.pending:  # asked once more when the re-read is due
            checked.set()
        return holder.tracked(name)

    async with PushScheduler(
        emu.vault_url,
        tracked=tracked,
        reread=holder.reread,
        notify_max_delay=0.2,
        rng=AtMax(),
    ) as scheduler:
        assert scheduler.notify(webhook.deliveries[0].body).scheduled == {"a"}
        await holder.reread({"a"})  # the safety poll, before the push re-read is due
        holder.calls.clear()
        emu.clear_requests()
        await asyncio.wait_for(checked.wait(), 10)
        await asyncio.sleep(0)
        assert holder.calls == [] and gets(emu, "a") == 0
        assert scheduler.rereads == 0


async def test_expiry_events_are_recorded_and_logged(
    keyvault_emulator: KeyVaultEmulator,
    webhook: Webhook,
    client: SecretClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import datetime as dt

    emu = keyvault_emulator
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    emu.set_secret("old", VALUE, expires_on=past)
    emu.set_secret("untracked-old", VALUE, expires_on=past)
    holder = Holder(client, ["old"])
    await holder.load()
    await emu.subscribe(webhook.url, event_types=[SECRET_EXPIRED])
    emu.scan_expiry()
    await emu.events_idle()
    caplog.set_level(logging.WARNING, "kvconfig")
    async with PushScheduler(
        emu.vault_url, tracked=holder.tracked, reread=holder.reread
    ) as scheduler:
        results = [scheduler.notify(d.json()) for d in webhook.deliveries]
        assert sum(r.expiry for r in results) == 1
        notice = scheduler.expiry["old"]
        assert notice.kind == "expired" and notice.expires == past
        assert notice.version == holder.versions["old"]
        assert "untracked-old" not in scheduler.expiry
        assert scheduler.pending == frozenset()
    assert "SecretExpired" in caplog.text and VALUE not in caplog.text


async def test_reread_failure_is_counted_not_raised(
    keyvault_emulator: KeyVaultEmulator,
    webhook: Webhook,
    client: SecretClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emu = keyvault_emulator
    emu.seed({"a": VALUE})
    holder = Holder(client, ["a"])
    await holder.load()
    await emu.subscribe(webhook.url)
    emu.set_secret("a", "r1")
    emu.set_secret("a", "r2")
    await emu.events_idle()
    first, second = (d.body for d in webhook.deliveries)
    async with PushScheduler(
        emu.vault_url, tracked=holder.tracked, reread=holder.reread, notify_max_delay=0
    ) as scheduler:
        holder.fail = True
        scheduler.notify(first)
        await holder.next_reread()
        holder.fail = False
        scheduler.notify(second)  # the scheduler still works after a failure
        await holder.next_reread()
        assert scheduler.reread_failures == 1
        assert scheduler.last_reread_error == "ConnectionError"
        assert holder.versions["a"] == parse_events(second)[0].version
    assert VALUE not in caplog.text and VALUE not in repr(scheduler)


async def test_lifecycle_close_cancels_a_reread_in_flight(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    started = asyncio.Event()

    async def hang(names: set[str]) -> None:
        started.set()
        await asyncio.Event().wait()

    event = SecretEvent(
        SECRET_NEW_VERSION_CREATED, vault_host(keyvault_emulator.vault_url), "a", "v2"
    )
    scheduler = PushScheduler(
        keyvault_emulator.vault_url, tracked=lambda n: "v1", reread=hang, notify_max_delay=0
    )
    with pytest.raises(RuntimeError, match="async with"):
        scheduler.notify([event])
    async with scheduler:
        scheduler.notify([event])
        await asyncio.wait_for(started.wait(), 10)
    await scheduler.aclose()  # idempotent
    assert scheduler.notify([event]).ignored == 1


async def test_notify_from_another_thread(
    keyvault_emulator: KeyVaultEmulator, client: SecretClient
) -> None:
    emu = keyvault_emulator
    emu.seed({"a": VALUE})
    holder = Holder(client, ["a"])
    await holder.load()
    new = emu.set_secret("a", "rotated")
    event = SecretEvent(SECRET_NEW_VERSION_CREATED, vault_host(emu.vault_url), "A", new)
    async with PushScheduler(
        emu.vault_url, tracked=holder.tracked, reread=holder.reread, notify_max_delay=0
    ) as scheduler:
        await asyncio.to_thread(scheduler.notify, [event])
        assert await holder.next_reread() == {"A"}
        assert holder.versions["a"] == new
