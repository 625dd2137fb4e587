"""A scriptable webhook for the push tests: a real aiohttp server on loopback that records every
request the emulator's Event Grid delivery makes and answers as told."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Webhook:
    """``validation``: "echo" (answer the code), "wrong", "manual" (200, no code), "fail" (500);
    ``statuses``: statuses to answer event deliveries with, in order (then 200); ``delays``:
    seconds to stall each delivery, in order; ``allowed_origin`` for the CloudEvents OPTIONS."""

    url: str = ""
    validation: str = "echo"
    allowed_origin: str | None = "echo"
    statuses: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on every request

    @property
    def deliveries(self) -> list[Received]:
        """Event deliveries (not handshakes)."""
        return [
            r
            for r in self.received
            if r.method == "POST" and r.headers.get("aeg-event-type") != "SubscriptionValidation"
        ]

    def events(self) -> list[dict[str, Any]]:
        """Every event delivered, flattened over deliveries (2xx answered or not)."""
        out: list[dict[str, Any]] = []
        for r in self.deliveries:
            body = r.json()
            out.extend(body if isinstance(body, list) else [body])
        return out

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        record = Received(
            request.method, request.path, dict(request.query), dict(request.headers), body
        )
        self.received.append(record)
        self.arrived.set()
        if request.method == "OPTIONS":
            origin = request.headers.get("WebHook-Request-Origin", "")
            if self.allowed_origin is None:
                return web.Response(status=200)
            allowed = origin if self.allowed_origin == "echo" else self.allowed_origin
            return web.Response(status=200, headers={"WebHook-Allowed-Origin": allowed})
        if request.headers.get("aeg-event-type") == "SubscriptionValidation":
            code = record.json()[0]["data"]["validationCode"]
            if self.validation == "echo":
                return web.json_response({"validationResponse": code})
            if self.validation == "wrong":
                return web.json_response({"validationResponse": "nope"})
            if self.validation == "manual":
                return web.Response(status=200)
            return web.Response(status=500)
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)
