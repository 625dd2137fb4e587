"""The drop-in source: exact GETs, concurrent, from any thread, with or without a running loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import pathlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from kvconfig import (
    AzureKeyVaultSettingsSource,
    ConfigurationError,
    VaultAuthenticationError,
    VaultPermissionError,
)
from kvconfig.emulator import KeyVaultEmulator

from .conftest import SourceFactory, with_source


class Database(BaseModel):
    host: str
    password: SecretStr


class Settings(BaseSettings):
    api_key: SecretStr
    database: Database
    log_level: str = "INFO"


SECRETS = {"api-key": "k1", "database--host": "db.local", "database--password": "pw"}
for index in range(40):
    SECRETS[f"unrelated-{index}"] = "x"


def _secret_requests(emu: KeyVaultEmulator) -> list[str]:
    return [r.path for r in emu.requests if r.status != 401]


def test_reads_exactly_what_the_class_can_use(
    sync_emulator: KeyVaultEmulator, dropin: Callable[..., SourceFactory]
) -> None:
    sync_emulator.seed(SECRETS)
    settings = with_source(Settings, dropin(dash_to_underscore=True))()
    assert settings.database.password.get_secret_value() == "pw"  # type: ignore[attr-defined]
    paths = sorted(p.strip("/").split("/")[1] for p in _secret_requests(sync_emulator))
    # no list; api-key, log-level, database (JSON) and its two fields; nothing unrelated
    assert all(p.startswith("/secrets/") for p in _secret_requests(sync_emulator))
    assert paths == [
        "api-key",
        "database",
        "database--host",
        "database--password",
        "log-level",
    ]
    assert [r.status for r in sync_emulator.requests].count(401) == 1


def test_without_dash_to_underscore_underscored_names_are_never_requested(
    sync_emulator: KeyVaultEmulator, dropin: Callable[..., SourceFactory]
) -> None:
    class Plain(BaseSettings):
        api_key: str = "default"

    sync_emulator.seed({"api-key": "v"})
    assert with_source(Plain, dropin())().api_key == "default"  # type: ignore[attr-defined]
    assert sync_emulator.requests == []  # `api_key` cannot be a Key Vault name: no request


def test_inside_a_running_loop(
    sync_emulator: KeyVaultEmulator, dropin: Callable[..., SourceFactory]
) -> None:
    sync_emulator.seed(SECRETS)
    cls = with_source(Settings, dropin(dash_to_underscore=True))

    async def main() -> BaseSettings:
        return cls()  # plain Settings() in an async function, as a notebook cell does

    assert asyncio.run(main()).database.host == "db.local"  # type: ignore[attr-defined]


@pytest.mark.parametrize("aio", [False, True], ids=["sync-cred", "aio-cred"])
def test_from_four_threads_at_once(
    sync_emulator: KeyVaultEmulator, dropin: Callable[..., SourceFactory], aio: bool
) -> None:
    sync_emulator.seed(SECRETS)
    cls = with_source(Settings, dropin(aio=aio, dash_to_underscore=True))
    with ThreadPoolExecutor(4) as pool:
        hosts = list(pool.map(lambda _: cls().database.host, range(8)))  # type: ignore[attr-defined]
    assert hosts == ["db.local"] * 8
    gc.collect()  # an unclosed session or client would warn (warnings are errors)


def test_unknown_option_is_refused_before_any_request(sync_emulator: KeyVaultEmulator) -> None:
    with pytest.raises(ConfigurationError, match="unknown option"):
        AzureKeyVaultSettingsSource(
            Settings, sync_emulator.vault_url, sync_emulator.sync_credential(), bogus=1
        )
    assert sync_emulator.requests == []


class BadCredential:
    """A sync credential whose token the vault refuses (401)."""

    def get_token(self, *scopes: str, **kwargs: object) -> object:
        from azure.core.credentials import AccessToken

        return AccessToken("not-a-token", 2**31)


def test_refused_credential_raises_vault_error_and_leaves_no_connection_open(
    sync_emulator: KeyVaultEmulator,
) -> None:
    """A 401 while the other GETs are on the wire: VaultAuthenticationError, and the source
    returns with every connection closed. Regression: the others were cancelled mid-connect,
    leaving TLS closes that the private loop never finished (an unclosed socket, about one load
    in forty); hence 25 rounds."""
    sync_emulator.seed(SECRETS)
    for _ in range(25):
        sent = len(sync_emulator.requests)
        source = AzureKeyVaultSettingsSource(
            Settings,
            sync_emulator.vault_url,
            BadCredential(),
            dash_to_underscore=True,
            ca_file=sync_emulator.ca_file,
        )
        assert len(sync_emulator.requests) == sent  # read when called, not when constructed
        with pytest.raises(VaultAuthenticationError):
            source()
        gc.collect()  # an unclosed socket is a ResourceWarning, an error here


class ClosingSyncCredential:
    """A sync credential that, like azure-identity's, cannot fetch tokens once closed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.closed = 0
        self.tokens = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        assert not self.closed, "HTTP transport has already been closed"
        self.tokens += 1
        return self._inner.get_token(*scopes, **kwargs)

    def close(self) -> None:
        self.closed += 1


def test_a_sync_credential_is_never_closed_and_serves_every_call(
    sync_emulator: KeyVaultEmulator,
) -> None:
    """pydantic-settings never closes the credential it is given, and a Django or Flask app
    builds Settings() again later with the same one: each call fetched a token, none closed."""
    sync_emulator.seed(SECRETS)
    credential = ClosingSyncCredential(sync_emulator.sync_credential())

    def build(cls: type[BaseSettings]) -> PydanticBaseSettingsSource:
        return AzureKeyVaultSettingsSource(
            cls,
            sync_emulator.vault_url,
            credential,
            dash_to_underscore=True,
            ca_file=sync_emulator.ca_file,
        )

    settings_cls = with_source(Settings, build)
    for _ in range(2):
        assert settings_cls().api_key.get_secret_value() == "k1"  # type: ignore[attr-defined]
    assert credential.tokens == 2 and credential.closed == 0


def test_logs_one_line_without_values(
    sync_emulator: KeyVaultEmulator,
    dropin: Callable[..., SourceFactory],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sync_emulator.seed(SECRETS)
    with caplog.at_level(logging.DEBUG, logger="kvconfig"):
        with_source(Settings, dropin(dash_to_underscore=True))()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "pydantic-settings rules" in text
    assert "db.local" not in text and "pw" not in text.split() and "k1" not in text


def _read(emu: KeyVaultEmulator, since: int = 0) -> list[str]:
    """The secret names GET by name since request ``since`` (no list, no challenge)."""
    return sorted(
        r.path.strip("/").split("/")[1]
        for r in emu.requests[since:]
        if r.status != 401 and r.path.count("/") >= 2
    )


def _source(
    emu: KeyVaultEmulator, cls: type[BaseSettings] = Settings, client_id: str | None = None
) -> AzureKeyVaultSettingsSource:
    return AzureKeyVaultSettingsSource(
        cls,
        emu.vault_url,
        emu.sync_credential(client_id),
        dash_to_underscore=True,
        ca_file=emu.ca_file,
        startup_timeout=3.0,
    )


def test_constructed_but_never_called_makes_no_request(sync_emulator: KeyVaultEmulator) -> None:
    sync_emulator.seed(SECRETS)
    source = _source(sync_emulator)
    assert repr(source.env_vars) == "<secrets not read yet>"
    del source
    gc.collect()
    assert sync_emulator.requests == []


def test_called_directly_reads_everything_once(sync_emulator: KeyVaultEmulator) -> None:
    sync_emulator.seed(SECRETS)
    source = _source(sync_emulator)
    values = source()  # no BaseSettings around it: no current state, nothing supplied
    assert values["database"]["host"] == "db.local"
    names = ["api-key", "database", "database--host", "database--password", "log-level"]
    assert _read(sync_emulator) == names
    before = len(sync_emulator.requests)
    assert source() == values  # a second call asks only for names not asked yet: none
    assert len(sync_emulator.requests) == before


def test_direct_lookup_before_any_call_reads_on_first_use(sync_emulator: KeyVaultEmulator) -> None:
    sync_emulator.seed(SECRETS)
    source = _source(sync_emulator)
    assert sync_emulator.requests == []
    assert source.env_vars["database--host"] == "db.local"
    assert _read(sync_emulator)[0] == "api-key"


def test_fields_supplied_earlier_are_not_requested(
    sync_emulator: KeyVaultEmulator,
    dropin: Callable[..., SourceFactory],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync_emulator.seed(SECRETS)
    cls = with_source(Settings, dropin(dash_to_underscore=True))
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = cls(api_key="from-init")
    assert settings.api_key.get_secret_value() == "from-init"  # type: ignore[attr-defined]
    assert settings.log_level == "DEBUG"  # type: ignore[attr-defined]
    assert _read(sync_emulator) == ["database", "database--host", "database--password"]

    # A partly supplied model: only its missing leaves (and its JSON secret) are read, and
    # they merge under what the environment gave, as pydantic-settings' deep update does.
    before = len(sync_emulator.requests)
    monkeypatch.setenv("DATABASE", '{"host": "env-host"}')
    settings = cls(api_key="from-init")
    assert settings.database.host == "env-host"  # type: ignore[attr-defined]
    assert settings.database.password.get_secret_value() == "pw"  # type: ignore[attr-defined]
    assert _read(sync_emulator, before) == ["database", "database--password"]

    before = len(sync_emulator.requests)
    settings = cls(api_key="k", database=Database(host="h", password=SecretStr("p")))
    assert settings.database.host == "h"  # type: ignore[attr-defined]
    assert sync_emulator.requests[before:] == []  # everything supplied: no request, no loop


def test_a_refusal_on_a_supplied_field_does_not_fail_settings(
    sync_emulator: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_emulator.seed(SECRETS)
    sync_emulator.add_identity("lister", permissions=["list"])  # every GET is a 403
    cls = with_source(Settings, lambda c: _source(sync_emulator, c, "lister"))
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    monkeypatch.setenv("DATABASE", '{"host": "h", "password": "p"}')
    assert cls(api_key="k").database.host == "h"  # type: ignore[attr-defined]
    assert sync_emulator.requests == []
    monkeypatch.delenv("LOG_LEVEL")
    with pytest.raises(VaultPermissionError):  # the same identity, a field left to the vault
        cls(api_key="k")


def test_a_bad_secret_for_a_supplied_field_is_never_read(
    sync_emulator: KeyVaultEmulator,
    dropin: Callable[..., SourceFactory],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync_emulator.seed({**SECRETS, "database": "{not json"})  # pydantic-settings: SettingsError
    monkeypatch.setenv("DATABASE", '{"host": "h", "password": "p"}')
    settings = with_source(Settings, dropin(dash_to_underscore=True))()
    assert settings.database.host == "h"  # type: ignore[attr-defined]
    assert _read(sync_emulator) == ["api-key", "log-level"]


def test_a_dotenv_file_supplies_too(
    sync_emulator: KeyVaultEmulator,
    dropin: Callable[..., SourceFactory],
    tmp_path: pathlib.Path,
) -> None:
    sync_emulator.seed(SECRETS)
    env_file = tmp_path / ".env"
    env_file.write_text("API_KEY=from-dotenv\nLOG_LEVEL=WARNING\n")
    settings = with_source(Settings, dropin(dash_to_underscore=True))(_env_file=env_file)
    assert settings.api_key.get_secret_value() == "from-dotenv"  # type: ignore[attr-defined]
    assert _read(sync_emulator) == ["database", "database--host", "database--password"]


class Flags(BaseSettings):
    feature_flags: dict[str, bool]  # read entry by entry: the drop-in lists the vault for it


def test_the_list_pass_retries_a_transient_failure_and_keeps_the_vaults_spelling(
    sync_emulator: KeyVaultEmulator, dropin: Callable[..., SourceFactory]
) -> None:
    """The drop-in's list pass is the refresh's (plain-JSON pages, one retry policy): a 503 on
    the first page is retried; with case_sensitive=True the vault's own spelling decides."""
    sync_emulator.seed({"feature-flags--Beta": "true", "feature-flags--dark": "false"})
    sync_emulator.faults.fail_next(1, status=503)
    settings = with_source(Flags, dropin(dash_to_underscore=True, case_sensitive=True))()
    assert settings.feature_flags == {"Beta": True, "dark": False}  # type: ignore[attr-defined]
    lists = [r for r in sync_emulator.requests if r.path == "/secrets" and r.status != 401]
    assert [r.status for r in lists] == [503, 200]


def test_a_refused_list_is_a_permission_error_naming_the_vault(
    sync_emulator: KeyVaultEmulator, dropin: Callable[..., SourceFactory]
) -> None:
    sync_emulator.seed({"feature-flags--beta": "true"})
    sync_emulator.faults.fail_next(1, status=403)
    with pytest.raises(VaultPermissionError, match=r"listing the secrets of vault https://"):
        with_source(Flags, dropin(dash_to_underscore=True))()
