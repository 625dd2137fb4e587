"""Hostile input to the library: bad values, bad JSON, huge values, names that differ only in case,
and field names that cannot become secret names.

Whatever the input, kvconfig either loads exactly what the vault holds or raises its own error
naming the field (never the value), and an invalid plan sends no request at all (checked in the
emulator's request log). Field names are generated with hypothesis (derandomized: the same inputs
every run), loaded through a real ``KeyVault`` against an emulator on a background thread.
"""

from __future__ import annotations

import asyncio
import json
import keyword
import re
from typing import Annotated, Any

import pytest
from _figures import record
from _library import CANARY_PREFIX, canary, make_vault
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from kvconfig import (
    InvalidSecretNameError,
    KeyVault,
    Secret,
    SecretNameCollisionError,
    SettingsValidationError,
)
from kvconfig.emulator import CertificateAuthority, EmulatorThread, KeyVaultEmulator

VALID_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
MAX_VALUE = 25 * 1024  # Key Vault's limit on a secret value, in bytes of UTF-8
EXAMPLES = 200

_tried: dict[str, int] = {}


def _count(kind: str, n: int = 1) -> None:
    _tried[kind] = _tried.get(kind, 0) + n


def _assert_no_value(exc: BaseException, *values: str) -> None:
    text = f"{exc}\n{exc!r}\n{getattr(exc, 'errors', '')}"
    assert CANARY_PREFIX not in text, text
    for value in values:
        assert value not in text


def _sent(emu: KeyVaultEmulator) -> int:
    return len(emu.requests)


# -- values --------------------------------------------------------------------------------------


class Typed(BaseSettings):
    port: int
    ratio: float = 1.0
    limits: dict[str, int] = {}
    tags: list[str] = []


class Database(BaseModel):
    host: str
    port: int = 5432


class WithModel(BaseSettings):
    database: Database


BAD_VALUES: list[tuple[type[BaseSettings], dict[str, str], str]] = [
    (Typed, {"port": "{c}"}, "port"),
    (Typed, {"port": "1e3{c}"}, "port"),
    (Typed, {"port": "8080", "ratio": "{c}"}, "ratio"),
    (Typed, {"port": "8080", "limits": "{{not json {c}"}, "limits"),
    (Typed, {"port": "8080", "limits": '{{"a": "{c}"}}'}, "limits"),
    (Typed, {"port": "8080", "limits": '["{c}"]'}, "limits"),
    (Typed, {"port": "8080", "limits": '{{"a": 1, "a": "{c}"'}, "limits"),
    (Typed, {"port": "8080", "tags": '{{"{c}": 1}}'}, "tags"),
    (Typed, {"port": "8080", "tags": "[" * 5000 + "{c}"}, "tags"),
    (WithModel, {"database": '{{"host": 1, "port": "{c}"}}'}, "database"),
    (WithModel, {"database": "{c}"}, "database"),
    (WithModel, {"database--host": "h-{c}", "database--port": "{c}"}, "database"),
]


@pytest.mark.parametrize(("cls", "secrets", "field"), BAD_VALUES)
async def test_values_that_fail_validation_name_the_field_never_the_value(
    keyvault_emulator: KeyVaultEmulator,
    cls: type[BaseSettings],
    secrets: dict[str, str],
    field: str,
) -> None:
    token = canary()
    values = {name: text.replace("{c}", token) for name, text in secrets.items()}
    values = {name: v.replace("{{", "{").replace("}}", "}") for name, v in values.items()}
    keyvault_emulator.seed(values)
    async with make_vault(keyvault_emulator) as vault:
        with pytest.raises(SettingsValidationError) as caught:
            await vault.load(cls)
    _count("bad_values")
    assert field in str(caught.value)
    _assert_no_value(caught.value, *values.values())


async def test_huge_and_odd_values_round_trip_exactly(keyvault_emulator: KeyVaultEmulator) -> None:
    class Odd(BaseSettings):
        ascii_max: SecretStr
        multibyte_max: SecretStr
        control: SecretStr
        big_json: dict[str, str]

    head = canary()
    ascii_max = head + "x" * (MAX_VALUE - len(head))
    snowman = "☃𝄞é"  # 3 + 4 + 2 bytes
    multibyte = head + snowman * ((MAX_VALUE - len(head)) // len(snowman.encode()))
    control = head + "\x00\x01\t\r\n\u2028\ufeff \"'\\ <script>%s{}%(x)s"
    big_json = {f"k{i}": f"{head}-{i}" for i in range(440)}
    big = json.dumps(big_json)
    assert len(big.encode()) <= MAX_VALUE
    assert len(multibyte.encode()) <= MAX_VALUE
    keyvault_emulator.seed(
        {
            "ascii-max": ascii_max,
            "multibyte-max": multibyte,
            "control": control,
            "big-json": big,
        }
    )
    async with make_vault(keyvault_emulator) as vault:
        odd = await vault.load(Odd)
    _count("huge_or_odd_values", 4)
    assert odd.ascii_max.get_secret_value() == ascii_max
    assert odd.multibyte_max.get_secret_value() == multibyte
    assert odd.control.get_secret_value() == control
    assert odd.big_json == big_json
    shown = repr(odd.model_copy(update={"big_json": {}}))  # a plain dict field shows its value
    assert CANARY_PREFIX not in shown and CANARY_PREFIX not in str(odd.ascii_max)


# -- names ---------------------------------------------------------------------------------------


async def test_fields_differing_only_in_case_collide_before_any_request(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    both = create_model("Both", api_key=(str, "a"), API_KEY=(str, "b"), __base__=BaseSettings)
    before = _sent(keyvault_emulator)
    async with make_vault(keyvault_emulator) as vault:
        with pytest.raises(SecretNameCollisionError) as caught:
            await vault.load(both)
    _count("case_collisions")
    assert set(caught.value.fields) == {"api_key", "API_KEY"}
    assert _sent(keyvault_emulator) == before


async def test_secrets_differing_only_in_case_are_one_secret(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    class Key(BaseSettings):
        api_key: SecretStr

    class Upper(BaseSettings):
        API_KEY: SecretStr

    emu = keyvault_emulator
    first, second = canary("upper"), canary("lower")
    emu.set_secret("Api-Key", first)
    emu.set_secret("api-key", second)  # a new version of the same secret
    async with make_vault(emu, ttl=0) as vault:
        assert (await vault.load(Key)).api_key.get_secret_value() == second
        assert (await vault.load(Upper)).API_KEY.get_secret_value() == second
        async with emu.secret_client() as client:
            names = [p.name async for p in client.list_properties_of_secrets()]
            versions = [v async for v in client.list_properties_of_secret_versions("API-KEY")]
    _count("case_variants", 3)
    assert [n.lower() for n in names if n] == ["api-key"]
    assert len(versions) == 2


EXPLICIT_BAD_NAMES = [
    "api-key\n",  # `$` in a regex matches before a trailing newline
    "api_key",
    "api key",
    "",
    "a" * 128,
    "../secrets/other",
    "api-key/versions",
    "café",
    "api-key\x00",
    "١٢٣",  # Arabic-Indic digits: \d would take them, Key Vault does not
]


@pytest.mark.parametrize("name", EXPLICIT_BAD_NAMES)
async def test_explicit_names_key_vault_cannot_hold_are_refused_before_any_request(
    keyvault_emulator: KeyVaultEmulator, name: str
) -> None:
    cls = create_model(
        "Explicit", value=(Annotated[str, Secret(name)], "default"), __base__=BaseSettings
    )
    before = _sent(keyvault_emulator)
    async with make_vault(keyvault_emulator) as vault:
        with pytest.raises(InvalidSecretNameError) as caught:
            vault.plan(cls)
        with pytest.raises(InvalidSecretNameError):
            await vault.load(cls)
    _count("bad_explicit_names")
    assert caught.value.field == "value"
    assert _sent(keyvault_emulator) == before


# -- generated field names -----------------------------------------------------------------------

_RESERVED = set(dir(BaseSettings)) | {"model_config"}


def _usable_field_name(name: str) -> bool:
    """Python identifiers pydantic accepts as a BaseSettings field without a warning."""
    return (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and not name.startswith("_")
        and not name.startswith(("model_", "settings_"))
        and name not in _RESERVED
    )


field_names = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,140}", fullmatch=True),
    st.text(
        st.characters(categories=("Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "Mn", "Pc")),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from(["a", "A", "a_", "a__b", "a___b", "x" * 127, "x" * 128, "µ", "ǅ", "ﬁle"]),
).filter(_usable_field_name)

field_sets = st.lists(field_names, min_size=1, max_size=4, unique=True)


class _Base(BaseSettings):
    # No generated name may pick up this process's environment (PATH, HOME, ...).
    model_config = SettingsConfigDict(env_prefix="KVCONFIG_HOSTILE_UNSET_")


def _model(names: list[str]) -> type[BaseSettings]:
    fields: dict[str, Any] = {name: (str, "default") for name in names}
    return create_model("Generated", __base__=_Base, **fields)


def _check_plan(vault: KeyVault, names: list[str]) -> dict[str, str] | None:
    """The plan's field -> secret name, or None when it raised the right error."""
    cls = _model(names)
    try:
        plan = vault.plan(cls)
    except InvalidSecretNameError as exc:
        assert exc.field in names
        assert f'"{exc.field}"' in str(exc)
        assert VALID_NAME.fullmatch(exc.secret_name) is None, exc.secret_name
        return None
    except SecretNameCollisionError as exc:
        assert set(exc.fields) <= set(names) and len(exc.fields) == 2
        assert all(f'"{field}"' in str(exc) for field in exc.fields)
        a, b = (vault.prefix + f.replace("_", "-") for f in exc.fields)
        assert a.lower() == b.lower()
        return None
    mapped = {secret.field: secret.name for secret in plan.secrets}
    assert set(mapped) == set(names)
    for field, name in mapped.items():
        assert VALID_NAME.fullmatch(name), (field, name)
    return mapped


@pytest.fixture(scope="module")
def threaded_emulator(keyvault_ca: CertificateAuthority) -> Any:
    with EmulatorThread(ca=keyvault_ca) as emu:
        yield emu


_property_runs = {"examples": 0, "loaded": 0, "refused": 0}


@pytest.fixture(scope="module", autouse=True)
def _record_figures() -> Any:
    """After the module: record what was tried (whichever of its tests ran)."""
    yield
    if _tried:
        record("library.hostile.inputs_tried", sum(_tried.values()))
    if _property_runs["examples"]:
        record("library.hostile.generated_field_sets", _property_runs["examples"])
        record("library.hostile.generated_loaded", _property_runs["loaded"])
        record("library.hostile.generated_refused_before_request", _property_runs["refused"])
    if _property_runs.get("values"):
        record("library.hostile.generated_values_round_tripped", _property_runs["values"])


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(names=field_sets)
@example(names=["api_key"])  # loads
@example(names=["café"])  # invalid name
@example(names=["db_host", "DB_HOST"])  # collision
def test_generated_field_names_map_to_valid_names_or_raise_naming_the_field(
    threaded_emulator: KeyVaultEmulator, names: list[str]
) -> None:
    emu = threaded_emulator
    _property_runs["examples"] += 1

    async def run() -> None:
        async with make_vault(emu, ttl=0) as vault:
            mapped = _check_plan(vault, names)
            before = _sent(emu)
            if mapped is None:
                with pytest.raises((InvalidSecretNameError, SecretNameCollisionError)):
                    await vault.load(_model(names))
                assert _sent(emu) == before, "a request was sent for an invalid plan"
                _property_runs["refused"] += 1
                return
            values = {name: canary() for name in mapped.values()}
            emu.seed(values)
            loaded = await vault.load(_model(names))
            for field, name in mapped.items():
                assert getattr(loaded, field) == values[name]
            _property_runs["loaded"] += 1

    asyncio.run(run())


class Values(BaseSettings):
    plain: str
    secret: SecretStr
    optional: str | None = None


secret_texts = st.text(
    st.characters(exclude_categories=("Cs",)),  # no lone surrogates: values are UTF-8
    min_size=1,
    max_size=300,
).map(lambda text: CANARY_PREFIX + text)


@settings(max_examples=100, derandomize=True, deadline=None)
@given(plain=secret_texts, secret=secret_texts, optional=secret_texts)
def test_any_text_value_round_trips_exactly(
    threaded_emulator: KeyVaultEmulator, plain: str, secret: str, optional: str
) -> None:
    """Whatever text a secret holds (JSON-looking, whitespace, control and astral characters),
    a ``str`` field gets exactly that text: no stripping, no JSON decoding, no normalisation."""
    emu = threaded_emulator
    _property_runs["values"] = _property_runs.get("values", 0) + 1
    emu.seed({"plain": plain, "secret": secret, "optional": optional})

    async def run() -> Values:
        async with make_vault(emu, ttl=0) as vault:
            return await vault.load(Values)

    loaded = asyncio.run(run())
    assert loaded.plain == plain
    assert loaded.secret.get_secret_value() == secret
    assert loaded.optional == optional
