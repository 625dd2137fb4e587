"""watch() across three vaults: rotations in any vault, per-vault detection modes, takeovers.

Request counts come from the emulator's log, per vault.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from kvconfig import ChangeEvent, Secret, VaultUnavailableError
from tests.refresh.helpers import next_second

from .conftest import MultiFactory, Vaults


class Telemetry(BaseModel):
    endpoint: str
    api_key: SecretStr


class Service(BaseSettings):
    db_password: SecretStr  # primary
    api_key: SecretStr  # primary
    region: str  # primary
    queue_name: str  # not in the primary: the legacy vault (fallback)
    telemetry: Annotated[Telemetry, Secret(vault="shared")]


def seed(vaults: Vaults) -> None:
    vaults.emu.seed({"db-password": "pw-1", "api-key": "key-1", "region": "north"})
    vaults.emu.seed({"telemetry--endpoint": "https://t1", "telemetry--api-key": "tk-1"}, "shared")
    vaults.emu.seed({"queue-name": "q-1"}, "legacy")


def lists(vaults: Vaults, vault: str) -> int:
    return sum(
        1
        for r in vaults.emu.requests
        if r.vault == vault and r.path == "/secrets" and r.status != 401
    )


async def test_rotation_in_each_vault_publishes_one_generation_each(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    seed(vaults)
    events: list[ChangeEvent] = []
    await next_second()
    vault = make_multi(fallback_vaults=["legacy"])
    async with vault.watch(Service, interval=60, clock_skew=0, on_change=events.append) as live:
        # Per-vault modes: the primary tracks 4 secrets (3 found, queue-name's 404) -> list;
        # shared tracks 3 (telemetry JSON 404 and two leaves) -> list; legacy tracks 1 -> get.
        assert live.health.vaults == {
            vaults.primary: "list",
            vaults.shared: "list",
            vaults.legacy: "get",
        }
        assert live.health.mode == "mixed"
        await next_second()
        vaults.emu.clear_requests()
        assert await live.refresh() is None  # nothing changed: list pages, one GET in legacy
        assert vaults.gets("default") == {} and vaults.gets("shared") == {}
        assert vaults.gets("legacy") == {"queue-name": 1}
        assert (lists(vaults, "default"), lists(vaults, "shared"), lists(vaults, "legacy")) == (
            1,
            1,
            0,
        )

        for name, vault_name, field in (
            ("api-key", "default", "api_key"),
            ("telemetry--api-key", "shared", "telemetry.api_key"),
            ("queue-name", "legacy", "queue_name"),
        ):
            await next_second()
            vaults.emu.set_secret(name, f"{name}-2", vault_name)
            event = await live.refresh()
            assert event is not None, name
            assert event.fields == (field,)
            assert [(c.name, c.vault_url) for c in event.secrets] == [
                (name, vaults.emu.vault_url_for(vault_name))
            ]
        assert live.generation == 3
        assert live.current.api_key.get_secret_value() == "api-key-2"
        assert live.current.telemetry.api_key.get_secret_value() == "telemetry--api-key-2"
        assert live.current.queue_name == "queue-name-2"

        # Rotations in two vaults seen by one refresh: one generation.
        await next_second()
        vaults.emu.set_secret("region", "south")
        vaults.emu.set_secret("telemetry--endpoint", "https://t2", "shared")
        event = await live.refresh()
        assert event is not None and set(event.fields) == {"region", "telemetry.endpoint"}
        assert live.generation == 4
    assert [e.generation for e in events] == [1, 2, 3, 4]


async def test_a_secret_created_earlier_in_the_chain_takes_over(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    seed(vaults)
    vault = make_multi(fallback_vaults=["legacy"])
    async with vault.watch(Service, interval=60) as live:
        assert live.current.queue_name == "q-1"
        vaults.emu.set_secret("queue-name", "q-primary")  # now the primary has it
        event = await live.refresh()
        assert event is not None and event.fields == ("queue_name",)
        assert live.current.queue_name == "q-primary"


async def test_the_next_candidate_is_read_when_the_resolved_one_goes(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    seed(vaults)
    vaults.emu.set_secret("queue-name", "q-primary")
    vault = make_multi(fallback_vaults=["legacy"], ttl=0)
    async with vault.watch(Service, interval=60, on_missing="default") as live:
        assert live.current.queue_name == "q-primary"
        assert vaults.gets("legacy") == {}  # never needed so far
        vaults.emu.delete_secret("queue-name")
        event = await live.refresh()
        assert event is not None and event.fields == ("queue_name",)
        assert live.current.queue_name == "q-1"  # from the fallback vault now
        assert vaults.gets("legacy") == {"queue-name": 1}


async def test_reference_target_rotation_is_tracked(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    seed(vaults)
    vaults.emu.set_secret("partner", "p-1", "shared")
    reference = f"@Microsoft.KeyVault(SecretUri={vaults.shared}/secrets/partner)"
    vault = make_multi(fallback_vaults=["legacy"])

    class WithReference(Service):
        partner: SecretStr

    async with vault.watch(WithReference, interval=60, partner=reference) as live:
        assert live.current.partner.get_secret_value() == "p-1"
        vaults.emu.set_secret("partner", "p-2", "shared")
        event = await live.refresh()
        assert event is not None and event.fields == ("partner",)
        assert live.current.partner.get_secret_value() == "p-2"
        vaults.emu.delete_secret("partner", "shared")
        await live.refresh()
        # The reference's secret went away: its last value stays, never the reference text.
        assert live.current.partner.get_secret_value() == "p-2"


async def test_failures_name_the_vault_and_keep_the_last_known_good(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    seed(vaults)
    vault = make_multi(fallback_vaults=["legacy"], startup_timeout=0.2)
    async with vault.watch(Service, interval=0.5) as live:
        vaults.emu.faults.outage(True)
        try:
            await live.refresh()
        except VaultUnavailableError as exc:
            assert any(url in str(exc) for url in (vaults.primary, vaults.shared, vaults.legacy))
        else:
            raise AssertionError("the refresh did not fail")
        finally:
            vaults.emu.faults.clear()
        health = live.health
        assert health.last_error is not None
        # The first vault to fail decides the error: list mode (primary, shared) or GET (legacy).
        assert any(
            url in health.last_error for url in (vaults.primary, vaults.shared, vaults.legacy)
        )
        assert live.current.queue_name == "q-1"
