"""The ready-made endpoints under real servers (uvicorn for ASGI, aiohttp's web server) receiving
the emulator's real deliveries, feeding PushSchedulers whose re-reads are real SDK GETs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import uvicorn
from aiohttp import web
from azure.keyvault.secrets.aio import SecretClient

from kvconfig._refresh._push import PushScheduler, SecretEvent
from kvconfig.emulator import KeyVaultEmulator, SubscriptionValidationError
from kvconfig.integrations.eventgrid import EventGridASGI, aiohttp_handler

VALUE = "CANARY-endpoint-value-41c2"
SECRET = "delivery-secret-9f"

Serve = Callable[..., Any]


@contextlib.asynccontextmanager
async def serve_asgi(targets: Any, **options: Any) -> AsyncIterator[str]:
    app = EventGridASGI(targets, **options)
    config = uvicorn.Config(
        app, lifespan="on", ws="none", http="h11", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/events"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def serve_aiohttp(targets: Any, **options: Any) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/events", aiohttp_handler(targets, **options))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/events"
    finally:
        await runner.cleanup()


@pytest.fixture(params=["asgi", "aiohttp"])
def serve(request: pytest.FixtureRequest) -> Serve:
    return serve_asgi if request.param == "asgi" else serve_aiohttp


class Replica:
    """One 'replica': a PushScheduler whose re-read GETs through the real SDK."""

    def __init__(self, emu: KeyVaultEmulator, client: SecretClient, names: list[str]) -> None:
        self.client = client
        self.versions = dict.fromkeys(names, "")
        self.done = asyncio.Event()
        self.scheduler = PushScheduler(
            emu.vault_url, tracked=self.versions.get, reread=self.reread, notify_max_delay=0.05
        )

    async def reread(self, names: set[str]) -> None:
        for name in names:
            secret = await self.client.get_secret(name)
            self.versions[name] = secret.properties.version or ""
        self.done.set()

    def notify(self, events: list[SecretEvent]) -> None:
        self.scheduler.notify(events)


@pytest.fixture
async def client(keyvault_emulator: KeyVaultEmulator) -> AsyncIterator[SecretClient]:
    async with keyvault_emulator.secret_client() as c:
        yield c


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
async def test_endpoint_validates_and_feeds_every_target(
    keyvault_emulator: KeyVaultEmulator, client: SecretClient, serve: Serve, schema: str
) -> None:
    emu = keyvault_emulator
    emu.seed({"db-password": VALUE})
    replicas = [Replica(emu, client, ["db-password"]) for _ in range(2)]
    async with (
        replicas[0].scheduler,
        replicas[1].scheduler,
        serve([r.scheduler for r in replicas], secret=SECRET) as url,
    ):
        await emu.subscribe(url, schema=schema, secret=SECRET)  # type: ignore[arg-type]
        emu.clear_requests()
        new = emu.set_secret("db-password", "rotated")
        for replica in replicas:
            await asyncio.wait_for(replica.done.wait(), 10)
            assert replica.versions["db-password"] == new
        await emu.events_idle()
    gets = [r for r in emu.requests if r.method == "GET" and r.path == "/secrets/db-password/"]
    assert len([r for r in gets if r.status == 200]) == 2  # one per replica (+ the challenge)
    outcomes = [(d.kind, d.status, d.outcome) for d in emu.deliveries]
    assert outcomes == [("validation", 200, "validated"), ("events", 200, "delivered")]


async def test_wrong_or_missing_secret_is_401_and_the_subscription_fails(
    keyvault_emulator: KeyVaultEmulator, client: SecretClient, serve: Serve
) -> None:
    emu = keyvault_emulator
    replica = Replica(emu, client, ["a"])
    async with replica.scheduler, serve(replica, secret=[SECRET, "next-secret"]) as url:
        for kwargs in ({}, {"secret": "wrong"}):
            with pytest.raises(SubscriptionValidationError) as info:
                await emu.subscribe(url, **kwargs)
            assert info.value.status == 401
        for schema in ("eventgrid", "cloudevents"):  # the rotated-in secret and the bearer work
            await emu.subscribe(url, schema=schema, secret="next-secret")  # type: ignore[arg-type]
            await emu.subscribe(url, schema=schema, bearer_token=SECRET)  # type: ignore[arg-type]
        assert SECRET not in repr(replica.scheduler)


class Recorder:
    def __init__(self) -> None:
        self.events: list[SecretEvent] = []

    def notify(self, events: list[SecretEvent]) -> None:
        self.events.extend(events)


async def test_bad_requests_and_binary_mode(
    keyvault_emulator: KeyVaultEmulator, serve: Serve
) -> None:
    recorder = Recorder()
    async with serve(recorder, max_body=4096) as url, aiohttp.ClientSession() as session:
        async with session.post(url, data=b"{not json") as resp:
            assert resp.status == 400
        async with session.post(url, json=[{"eventType": "x.y"}, 3]) as resp:
            assert resp.status == 400
            assert "event 1" in await resp.text()
        async with session.post(url, data=b"[" + b" " * 5000 + b"]") as resp:
            assert resp.status == 413
        async with session.get(url) as resp:
            assert resp.status == 405
        async with session.options(url) as resp:  # no origin: a plain OPTIONS
            assert resp.status == 200 and "WebHook-Allowed-Origin" not in resp.headers
        async with session.post(url, json=[]) as resp:  # an empty batch is fine
            assert resp.status == 200
        assert recorder.events == []
        # a binary-mode CloudEvent (attributes in ce-* headers)
        headers = {
            "ce-specversion": "1.0",
            "ce-type": "Microsoft.KeyVault.SecretNewVersionCreated",
            "ce-source": "/subscriptions/x/providers/Microsoft.KeyVault/vaults/default",
            "ce-id": "1",
            "ce-subject": "a",
        }
        data = {"Id": f"{keyvault_emulator.vault_url}/secrets/a/{'0' * 32}"}
        async with session.post(url, json=data, headers=headers) as resp:
            assert resp.status == 200
    assert [(e.name, e.version, e.event_id) for e in recorder.events] == [("a", "0" * 32, "1")]


async def test_a_failing_target_is_500_so_event_grid_retries(
    keyvault_emulator: KeyVaultEmulator, serve: Serve
) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        def notify(self, events: list[SecretEvent]) -> None:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError(f"boom {VALUE}")

    emu = keyvault_emulator
    target = Flaky()
    async with serve(target) as url:
        await emu.subscribe(url, retry_delay=0.01)
        emu.set_secret("a", VALUE)
        await emu.events_idle()
    assert [(d.status, d.outcome) for d in emu.deliveries if d.kind == "events"] == [
        (500, "retrying"),
        (200, "delivered"),
    ]
    assert target.calls == 2


def test_targets_must_have_notify() -> None:
    with pytest.raises(TypeError, match="notify"):
        EventGridASGI([object()])
    with pytest.raises(TypeError, match="notify"):
        aiohttp_handler([])

    class Target:
        def notify(self, events: list[SecretEvent]) -> None: ...

    with pytest.raises(ValueError, match="empty"):
        aiohttp_handler(Target(), secret="")
    assert SECRET not in repr(EventGridASGI(Target(), secret=SECRET))
