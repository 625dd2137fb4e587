"""Loading from several vaults: pinned fields and models, fallback vaults, prefix chains.

Every test runs the real SDK against one emulator serving three vaults and counts requests per
vault from its request log.
"""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from kvconfig import (
    ConfigurationError,
    KeyVault,
    MissingSettingError,
    Secret,
    SecretNameCollisionError,
)

from .conftest import MultiFactory, Vaults


class Telemetry(BaseModel):
    endpoint: str
    api_key: SecretStr


class Service(BaseSettings):
    db_password: SecretStr
    partner_key: Annotated[SecretStr, Secret(vault="shared")]
    telemetry: Annotated[Telemetry, Secret(vault="shared")]


async def test_pinned_field_and_model_read_only_their_vault(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    vaults.emu.seed({"db-password": "pw"})
    vaults.emu.seed(
        {"partner-key": "pk", "telemetry--endpoint": "https://t", "telemetry--api-key": "tk"},
        "shared",
    )
    settings = await make_multi().load(Service)
    assert settings.db_password.get_secret_value() == "pw"
    assert settings.partner_key.get_secret_value() == "pk"
    assert settings.telemetry.endpoint == "https://t"
    assert settings.telemetry.api_key.get_secret_value() == "tk"
    # No GET to the wrong vault; the model's JSON secret is looked up in its vault too.
    assert vaults.gets("default") == {"db-password": 1}
    assert vaults.gets("shared") == {
        "partner-key": 1,
        "telemetry": 1,
        "telemetry--endpoint": 1,
        "telemetry--api-key": 1,
    }
    assert vaults.gets("legacy") == {}
    # One challenge per vault used (priming per vault), none for the unused one.
    assert [s for _, s in vaults.statuses("default")].count(401) == 1
    assert [s for _, s in vaults.statuses("shared")].count(401) == 1
    assert vaults.statuses("legacy") == []
    assert vaults.lists() == 0


class ByUrl(BaseSettings):
    token: str


async def test_pinned_by_url_and_json_model_secret(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    annotated = type(
        "ByUrlPinned",
        (BaseSettings,),
        {
            "__annotations__": {
                "token": Annotated[str, Secret("the-token", vault=vaults.legacy + "/")],
                "telemetry": Annotated[Telemetry, Secret(vault="SHARED")],
            }
        },
    )
    vaults.emu.seed({"the-token": "t"}, "legacy")
    vaults.emu.seed({"telemetry": '{"endpoint": "e", "api_key": "from-json"}'}, "shared")
    settings = await make_multi().load(annotated)
    assert settings.token == "t"  # type: ignore[attr-defined]
    assert settings.telemetry.api_key.get_secret_value() == "from-json"  # type: ignore[attr-defined]
    assert vaults.gets("default") == {}


class Plain(BaseSettings):
    api_key: SecretStr
    queue_name: str


async def test_fallback_primary_wins_and_is_only_extra_get_after_404(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    vaults.emu.seed({"api-key": "primary"})
    vaults.emu.seed({"api-key": "shared", "queue-name": "q-shared"}, "shared")
    vaults.emu.seed({"queue-name": "q-legacy"}, "legacy")
    vault = make_multi(fallback_vaults=["shared", vaults.legacy])
    settings = await vault.load(Plain)
    assert settings.api_key.get_secret_value() == "primary"
    assert settings.queue_name == "q-shared"  # first fallback that has it
    assert vaults.statuses("default").count(("/secrets/api-key/", 200)) == 1
    assert vaults.statuses("default").count(("/secrets/queue-name/", 404)) == 1
    assert vaults.gets("shared") == {"queue-name": 1}  # api-key never asked of the fallback
    assert vaults.gets("legacy") == {}
    assert vault.fallback_vaults == (vaults.shared, vaults.legacy)


async def test_pinned_field_is_not_looked_up_in_fallbacks(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    vaults.emu.seed({"db-password": "pw", "partner-key": "in-primary"})
    vaults.emu.seed({"telemetry--endpoint": "e", "telemetry--api-key": "k"}, "shared")
    vaults.emu.seed({"partner-key": "in-legacy"}, "legacy")
    with pytest.raises(MissingSettingError) as caught:
        await make_multi(fallback_vaults=["legacy"]).load(Service)
    message = str(caught.value)
    assert "partner_key" in message and "'partner-key'" in message and vaults.shared in message
    assert vaults.legacy not in message
    assert "partner-key" not in vaults.gets("legacy")
    assert "partner-key" not in vaults.gets("default")


async def test_prefix_chain(vaults: Vaults, make_multi: MultiFactory) -> None:
    vaults.emu.seed({"stg-api-key": "stg", "api-key": "generic", "queue-name": "q"})
    vault = make_multi(prefix=("stg-", ""))
    settings = await vault.load(Plain)
    assert settings.api_key.get_secret_value() == "stg"
    assert settings.queue_name == "q"
    assert vaults.gets("default") == {"stg-api-key": 1, "stg-queue-name": 1, "queue-name": 1}
    assert vault.prefix == ("stg-", "")
    planned = {p.field: p for p in vault.plan(Plain)}
    assert planned["queue_name"].names == ("stg-queue-name", "queue-name")
    assert planned["queue_name"].vaults == (vaults.primary,)


async def test_prefix_chain_with_fallbacks_tries_every_name_per_vault_in_order(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    vaults.emu.seed({"api-key": "a"})
    vaults.emu.seed({"queue-name": "q-shared"}, "shared")
    vault = make_multi(prefix=("stg-", ""), fallback_vaults=["shared"])
    planned = {p.field: p for p in vault.plan(Plain)}
    assert planned["queue_name"].candidates == (
        (vaults.primary, "stg-queue-name"),
        (vaults.primary, "queue-name"),
        (vaults.shared, "stg-queue-name"),
        (vaults.shared, "queue-name"),
    )
    settings = await vault.load(Plain)
    assert settings.queue_name == "q-shared"
    order = [
        (vaults.name_of(vaults.emu.vault_url_for(r.vault)), r.path.lower())
        for r in vaults.emu.requests
        if "queue-name" in r.path and r.status != 401
    ]
    assert order == [
        ("default", "/secrets/stg-queue-name/"),
        ("default", "/secrets/queue-name/"),
        ("shared", "/secrets/stg-queue-name/"),
        ("shared", "/secrets/queue-name/"),
    ]


async def test_missing_error_names_field_every_name_and_every_vault(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    vaults.emu.seed({"api-key": "a"})
    vault = make_multi(prefix=("stg-", ""), fallback_vaults=["shared", "legacy"])
    with pytest.raises(MissingSettingError) as caught:
        await vault.load(Plain)
    message = str(caught.value)
    assert "queue_name" in message
    for text in ("'stg-queue-name'", "'queue-name'", vaults.primary, vaults.shared, vaults.legacy):
        assert text in message
    assert "api_key" not in message


async def test_unknown_alias_fails_before_any_request(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    class Bad(BaseSettings):
        token: Annotated[str, Secret(vault="nowhere")]

    vault = make_multi()
    with pytest.raises(ConfigurationError, match=r"'nowhere'.*aliases: legacy, shared"):
        await vault.load(Bad)
    assert vaults.emu.requests == []


def test_bad_vault_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="https"):
        Secret(vault="http://plain.example")
    with pytest.raises(ConfigurationError, match="alias"):
        Secret(vault="no spaces")


async def test_bad_keyvault_options(vaults: Vaults) -> None:
    credential = vaults.emu.credential()
    with pytest.raises(ConfigurationError, match=r"vaults\['x'\]"):
        KeyVault(vaults.primary, credential, vaults={"x": "http://insecure"})
    with pytest.raises(ConfigurationError, match="fallback_vaults entry 'nope'"):
        KeyVault(vaults.primary, credential, fallback_vaults=["nope"])
    with pytest.raises(ConfigurationError, match="list"):
        KeyVault(vaults.primary, credential, fallback_vaults=vaults.shared)
    with pytest.raises(ConfigurationError, match="prefix 'a_'"):
        KeyVault(vaults.primary, credential, prefix=("ok-", "a_"))
    await credential.close()


def test_same_name_in_two_vaults_is_no_collision_but_one_vault_still_is() -> None:
    from kvconfig._names import plan_settings

    class TwoVaults(BaseSettings):
        api_key: SecretStr
        partner: Annotated[SecretStr, Secret("api-key", vault="shared")]

    class OneVault(BaseSettings):
        api_key: SecretStr
        partner: Annotated[SecretStr, Secret("API-KEY")]

    assert [p.vault for p in plan_settings(TwoVaults)] == [None, "shared"]
    with pytest.raises(SecretNameCollisionError):
        plan_settings(OneVault)


async def test_same_name_in_two_vaults_loads_both(vaults: Vaults, make_multi: MultiFactory) -> None:
    class TwoVaults(BaseSettings):
        api_key: SecretStr
        partner: Annotated[SecretStr, Secret("api-key", vault="shared")]

    vaults.emu.seed({"api-key": "mine"})
    vaults.emu.seed({"api-key": "theirs"}, "shared")
    settings = await make_multi().load(TwoVaults)
    assert settings.api_key.get_secret_value() == "mine"
    assert settings.partner.get_secret_value() == "theirs"


async def test_one_client_session_and_limit_per_vault(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    vaults.emu.seed({"db-password": "pw"})
    vaults.emu.seed(
        {"partner-key": "pk", "telemetry--endpoint": "e", "telemetry--api-key": "k"}, "shared"
    )
    vault = make_multi(max_concurrency=3)
    await vault.load(Service)
    await vault.load(Service)  # cached: no request
    pool = vault._pool
    assert pool is not None
    assert pool.opened == (vaults.primary, vaults.shared)
    assert pool.session(vaults.primary) is not pool.session(vaults.shared)
    # One limit on requests in flight for the whole load, whatever the vault.
    limits = {id(pool.fetcher(url)._semaphore) for url in pool.opened}
    assert len(limits) == 1
    assert sum(vaults.gets("shared").values()) == 4
    sessions = [pool.session(url) for url in pool.opened]
    await vault.aclose()
    await vault.aclose()  # idempotent
    assert all(session.closed for session in sessions)


async def test_a_refusal_names_vault_secret_and_field(
    vaults: Vaults, make_multi: MultiFactory
) -> None:
    from kvconfig import VaultPermissionError

    class OnlyShared(BaseSettings):
        partner_key: Annotated[SecretStr, Secret(vault="shared")]

    vaults.emu.faults.fail_next(5, status=403)
    with pytest.raises(VaultPermissionError) as caught:
        await make_multi().load(OnlyShared)
    error = caught.value
    assert error.vault_url == vaults.shared and error.secret_name == "partner-key"
    assert "needed by field(s): partner_key" in error.__notes__
