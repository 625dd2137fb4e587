"""Shared helpers of the emulator tests (imported by name; no package, no clash)."""

from __future__ import annotations

from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from kvconfig.emulator import KeyVaultEmulator


class Raw:
    """Raw aiohttp requests to an emulator vault, authenticated with the emulator's token."""

    def __init__(self, emu: KeyVaultEmulator, session: aiohttp.ClientSession, token: str) -> None:
        self.emu = emu
        self.session = session
        self.token = token

    async def request(
        self,
        method: str,
        path: str,
        *,
        api_version: str | None = "2026-04-01",
        auth: str | None = "token",
        vault: str = "default",
        params: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, dict[str, Any] | None, CIMultiDictProxy[str]]:
        query = dict(params or {})
        if api_version is not None:
            query["api-version"] = api_version
        headers = dict(kwargs.pop("headers", {}))
        if auth == "token":
            headers["Authorization"] = f"Bearer {self.token}"
        elif auth is not None:
            headers["Authorization"] = auth
        url = self.emu.vault_url_for(vault) + path
        async with self.session.request(
            method, url, params=query, headers=headers, **kwargs
        ) as resp:
            raw = await resp.read()
            body = None if not raw else await resp.json()
            return resp.status, body, resp.headers
