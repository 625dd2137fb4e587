"""The emulator delivers Key Vault events to webhooks as Event Grid does (real SDK, real HTTP)."""

from __future__ import annotations

import datetime as dt
import re

import aiohttp
import pytest
from push_helpers import Webhook

from kvconfig.emulator import KeyVaultEmulator
from kvconfig.emulator._events import SubscriptionValidationError

NEW = "Microsoft.KeyVault.SecretNewVersionCreated"
NEAR = "Microsoft.KeyVault.SecretNearExpiry"
EXPIRED = "Microsoft.KeyVault.SecretExpired"
VALUE = "CANARY-events-value-0b5e"


async def test_eventgrid_handshake_then_sdk_set_delivers_key_vaults_shape(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    emu = keyvault_emulator
    sub = await emu.subscribe(webhook.url)
    handshake = webhook.received[0]
    assert handshake.headers["aeg-event-type"] == "SubscriptionValidation"
    (validation,) = handshake.json()
    assert validation["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
    assert set(validation["data"]) == {"validationCode", "validationUrl"}

    async with emu.secret_client() as client:
        secret = await client.set_secret("db-password", VALUE)
    await emu.events_idle()

    (delivery,) = webhook.deliveries
    assert delivery.headers["aeg-event-type"] == "Notification"
    assert delivery.headers["Content-Type"].startswith("application/json")
    assert VALUE.encode() not in delivery.body
    (event,) = delivery.json()
    assert set(event) == {
        "id",
        "topic",
        "subject",
        "eventType",
        "eventTime",
        "data",
        "dataVersion",
        "metadataVersion",
    }
    assert event["eventType"] == NEW
    assert event["subject"] == "db-password"
    assert re.fullmatch(
        r"/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+/providers/Microsoft\.KeyVault/vaults/"
        r"default",
        event["topic"],
    )
    assert event["metadataVersion"] == "1" and event["dataVersion"] == "1"
    assert dt.datetime.fromisoformat(event["eventTime"]).tzinfo is not None
    assert event["data"] == {
        "Id": secret.id,  # the SDK's own id for the version: https://127.0.0.1:PORT/secrets/...
        "VaultName": "default",
        "ObjectType": "Secret",
        "ObjectName": "db-password",
        "Version": secret.properties.version,
        "NBF": None,
        "EXP": None,
    }
    assert [(d.kind, d.outcome) for d in emu.deliveries] == [
        ("validation", "validated"),
        ("events", "delivered"),
    ]
    assert emu.deliveries[1].event_ids == (event["id"],)
    assert sub.active


async def test_cloudevents_handshake_single_and_batch(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    emu = keyvault_emulator
    await emu.subscribe(webhook.url, schema="cloudevents")
    options = webhook.received[0]
    assert options.method == "OPTIONS"
    assert options.headers["WebHook-Request-Origin"] == "eventgrid.azure.net"
    emu.set_secret("api-key", VALUE, expires_on=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    await emu.events_idle()
    (delivery,) = webhook.deliveries
    assert delivery.headers["Content-Type"].startswith("application/cloudevents+json")
    event = delivery.json()
    assert event["specversion"] == "1.0" and event["type"] == NEW
    assert event["source"].endswith("/providers/Microsoft.KeyVault/vaults/default")
    assert event["subject"] == "api-key"
    assert {"id", "time", "data"} <= set(event)
    assert event["data"]["EXP"] == int(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp())

    await emu.unsubscribe(webhook.url)
    webhook.received.clear()
    await emu.subscribe(webhook.url, schema="cloudevents", max_events_per_batch=10)
    emu.seed({"a": VALUE, "b": VALUE, "c": VALUE})
    await emu.events_idle()
    assert all(
        d.headers["Content-Type"].startswith("application/cloudevents-batch+json")
        for d in webhook.deliveries
    )
    assert sorted(e["subject"] for e in webhook.events()) == ["a", "b", "c"]
    assert VALUE.encode() not in b"".join(d.body for d in webhook.deliveries)


@pytest.mark.parametrize(
    ("schema", "validation", "allowed_origin"),
    [
        ("eventgrid", "wrong", "echo"),
        ("eventgrid", "fail", "echo"),
        ("cloudevents", "echo", None),
        ("cloudevents", "echo", "someone-else.example"),
    ],
)
async def test_endpoint_failing_validation_gets_no_events(
    keyvault_emulator: KeyVaultEmulator,
    webhook: Webhook,
    schema: str,
    validation: str,
    allowed_origin: str | None,
) -> None:
    emu = keyvault_emulator
    webhook.validation, webhook.allowed_origin = validation, allowed_origin
    with pytest.raises(SubscriptionValidationError, match="failed validation"):
        await emu.subscribe(webhook.url, schema=schema)  # type: ignore[arg-type]
    emu.set_secret("x", VALUE)
    await emu.events_idle()
    assert webhook.deliveries == []
    assert emu.events.subscriptions == []
    assert [d.outcome for d in emu.deliveries] == ["rejected"]


async def test_unreachable_endpoint_fails_validation(keyvault_emulator: KeyVaultEmulator) -> None:
    with pytest.raises(SubscriptionValidationError):
        await keyvault_emulator.subscribe("http://127.0.0.1:9/events", timeout=2.0)


async def test_manual_validation_through_validation_url(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    import asyncio

    emu = keyvault_emulator
    webhook.validation = "manual"
    subscribing = asyncio.create_task(emu.subscribe(webhook.url))
    await asyncio.wait_for(webhook.arrived.wait(), 10)
    url = webhook.received[0].json()[0]["data"]["validationUrl"]
    emu.set_secret("early", VALUE)  # before validation: not delivered
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
    await subscribing
    emu.set_secret("late", VALUE)
    await emu.events_idle()
    assert [e["subject"] for e in webhook.events()] == ["late"]


async def test_every_new_version_path_publishes_and_others_do_not(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    emu = keyvault_emulator
    await emu.subscribe(webhook.url)
    async with emu.secret_client() as client:
        await client.set_secret("sdk", VALUE)  # 1
        emu.set_secret("direct", VALUE)  # 2
        emu.seed({"seeded": VALUE})  # 3
        await client.update_secret_properties("sdk", content_type="text/plain")  # none
        backup = await client.backup_secret("sdk")
        await client.delete_secret("sdk")  # none (the aio client waits for the delete)
        await client.purge_deleted_secret("sdk")
        await client.restore_secret_backup(backup)  # 4
        await client.delete_secret("direct")
        await client.recover_deleted_secret("direct")  # 5
    await emu.events_idle()
    events = webhook.events()
    assert [e["subject"] for e in events] == ["sdk", "direct", "seeded", "sdk", "direct"]
    assert {e["eventType"] for e in events} == {NEW}


async def test_retry_on_5xx_and_timeouts_not_on_4xx(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    emu = keyvault_emulator
    await emu.subscribe(webhook.url, retry_delay=0.01, timeout=0.5, max_attempts=4)
    webhook.statuses = [503, 500]
    emu.set_secret("flaky", VALUE)
    await emu.events_idle()
    flaky = [(d.status, d.outcome) for d in emu.deliveries if d.subjects == ("flaky",)]
    assert flaky == [(503, "retrying"), (500, "retrying"), (200, "delivered")]

    webhook.delays = [1.0]  # stalls past the 0.5 s timeout once
    emu.set_secret("slow", VALUE)
    await emu.events_idle()
    slow = [(d.status, d.outcome) for d in emu.deliveries if d.subjects == ("slow",)]
    assert slow == [(0, "retrying"), (200, "delivered")]

    for status in (400, 401, 403, 413):
        webhook.statuses = [status]
        emu.set_secret(f"refused-{status}", VALUE)
        await emu.events_idle()
        refused = [
            (d.status, d.outcome)
            for d in emu.deliveries
            if d.subjects[0:1] == (f"refused-{status}",)
        ]
        assert refused == [(status, "dropped")]

    webhook.statuses = [503] * 4
    emu.set_secret("down", VALUE)
    await emu.events_idle()
    down = [d.outcome for d in emu.deliveries if d.subjects == ("down",)]
    assert down == ["retrying", "retrying", "retrying", "dropped"]
    assert [d.attempt for d in emu.deliveries if d.subjects == ("down",)] == [1, 2, 3, 4]


async def test_delivery_auth_query_secret_and_bearer_masked_in_log(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    emu = keyvault_emulator
    await emu.subscribe(webhook.url, secret="s3cr3t-delivery", bearer_token="tok-123")
    emu.set_secret("x", VALUE)
    await emu.events_idle()
    for request in webhook.received:  # the handshake too
        assert request.query["code"] == "s3cr3t-delivery"
        assert request.headers["Authorization"] == "Bearer tok-123"
    for record in emu.deliveries:
        assert "s3cr3t-delivery" not in repr(record)
        assert record.endpoint.endswith("?code=***")
    assert "s3cr3t-delivery" not in repr(emu.events.subscriptions)
    assert "tok-123" not in repr(emu.events.subscriptions)


async def test_filters_by_event_type_and_vault(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    emu = keyvault_emulator
    await emu.add_vault("second")
    await emu.subscribe(webhook.url, vault="second", event_types=[EXPIRED])
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    emu.set_secret("in-default", VALUE, expires_on=past)
    emu.set_secret("in-second", VALUE, "second", expires_on=past)
    assert emu.scan_expiry() == 2  # one event per vault; the subscription keeps one
    await emu.events_idle()
    events = webhook.events()
    assert [(e["eventType"], e["subject"]) for e in events] == [(EXPIRED, "in-second")]
    assert events[0]["topic"].endswith("/vaults/second")
    with pytest.raises(ValueError, match="unknown event types"):
        await emu.subscribe(webhook.url, event_types=["Microsoft.KeyVault.KeyNewVersionCreated"])
    with pytest.raises(KeyError):
        await emu.subscribe(webhook.url, vault="nope")


async def test_expiry_scan_near_and_expired_once_per_version(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    emu = keyvault_emulator
    now = dt.datetime(2027, 6, 1, tzinfo=dt.UTC)
    emu.set_secret("soon", VALUE, expires_on=now + dt.timedelta(days=10))
    emu.set_secret("gone", VALUE, expires_on=now - dt.timedelta(days=1))
    emu.set_secret("later", VALUE, expires_on=now + dt.timedelta(days=90))
    emu.set_secret("never", VALUE)
    await emu.subscribe(webhook.url, event_types=[NEAR, EXPIRED])
    assert emu.scan_expiry(now) == 2
    assert emu.scan_expiry(now) == 0  # once per version and kind
    assert emu.scan_expiry(now + dt.timedelta(days=11)) == 1  # "soon" has now expired
    await emu.events_idle()
    seen = [(e["eventType"], e["subject"]) for e in webhook.events()]
    assert sorted(seen[:2]) == [(EXPIRED, "gone"), (NEAR, "soon")]
    assert seen[2] == (EXPIRED, "soon")
    soon = next(e for e in webhook.events() if e["subject"] == "soon")
    assert soon["data"]["EXP"] == int((now + dt.timedelta(days=10)).timestamp())


async def test_unsubscribe_stops_delivery_and_close_is_clean(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    emu = keyvault_emulator
    sub = await emu.subscribe(webhook.url)
    await emu.unsubscribe(sub)
    await emu.unsubscribe(sub)  # idempotent
    emu.set_secret("after", VALUE)
    await emu.events_idle()
    assert webhook.deliveries == []
    await emu.subscribe(webhook.url)
    webhook.delays = [30.0]  # a delivery in flight when the emulator closes
    emu.set_secret("inflight", VALUE)
    await emu.aclose()  # cancels and awaits the delivery task; does not wait 30 s


async def test_events_from_another_thread_are_delivered(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    import asyncio

    emu = keyvault_emulator
    await emu.subscribe(webhook.url)
    await asyncio.to_thread(emu.set_secret, "threaded", VALUE)
    await emu.events_idle()
    assert [e["subject"] for e in webhook.events()] == ["threaded"]


async def test_eventgrid_batches_queued_events(
    keyvault_emulator: KeyVaultEmulator, webhook: Webhook
) -> None:
    emu = keyvault_emulator
    await emu.subscribe(webhook.url, max_events_per_batch=3)
    emu.seed({f"s{i}": VALUE for i in range(5)})  # queued in one go: batches of 3 and 2
    await emu.events_idle()
    assert [len(d.json()) for d in webhook.deliveries] == [3, 2]
    assert [e["subject"] for e in webhook.events()] == [f"s{i}" for i in range(5)]
    assert [len(d.event_ids) for d in emu.deliveries if d.kind == "events"] == [3, 2]
