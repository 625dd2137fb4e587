"""Push refresh across vaults: ``notify()`` routes each event to the vault it names (one scheduler
per vault); the re-read GETs that name along its chain only, and no list pass runs. Counts from
the emulator's log."""

from __future__ import annotations

import asyncio
from typing import Any

from kvconfig import ChangeEvent

from .conftest import MultiFactory, Vaults
from .test_watch import Service, lists, seed


def new_version(vault_url: str, name: str, version: str) -> dict[str, Any]:
    return {
        "eventType": "Microsoft.KeyVault.SecretNewVersionCreated",
        "subject": name,
        "data": {"Id": f"{vault_url}/secrets/{name}/{version}", "ObjectName": name},
    }


async def test_events_of_each_vault_reread_that_secret_only(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    seed(vaults)
    events: list[ChangeEvent] = []
    vault = make_multi(fallback_vaults=["legacy"])
    async with vault.watch(
        Service, interval=3600, notify_max_delay=0, on_change=events.append
    ) as live:
        vaults.emu.clear_requests()
        shared = vaults.emu.set_secret("telemetry--api-key", "tk-2", "shared")
        legacy = vaults.emu.set_secret("queue-name", "q-2", "legacy")
        result = live.notify(
            [
                new_version(vaults.shared, "telemetry--api-key", shared),
                new_version(vaults.legacy, "queue-name", legacy),
                new_version(vaults.primary, "telemetry--api-key", shared),  # not tracked there
                new_version("https://elsewhere.vault.azure.net", "region", "f" * 32),
            ]
        )
        assert result.scheduled == {"telemetry--api-key", "queue-name"}
        assert result.ignored == 2
        async with asyncio.timeout(10):
            while (  # noqa: ASYNC110
                live.current.telemetry.api_key.get_secret_value() != "tk-2"
                or live.current.queue_name != "q-2"
            ):
                await asyncio.sleep(0.01)
        assert vaults.gets("shared") == {"telemetry--api-key": 1}
        assert vaults.gets("legacy") == {"queue-name": 1}
        # queue-name's chain starts in the primary (where it was a 404): the chain is re-read as
        # a whole, so a secret created there meanwhile would take over, as at a poll.
        assert vaults.gets("default") == {"queue-name": 1}
        assert (lists(vaults, "default"), lists(vaults, "shared"), lists(vaults, "legacy")) == (
            0,
            0,
            0,
        )
        assert live.health.push_rereads >= 1
