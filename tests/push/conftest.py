"""Fixtures of the push tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from push_helpers import Webhook


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}/events"
    try:
        yield hook
    finally:
        await runner.cleanup()
