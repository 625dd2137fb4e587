"""Cold-load benchmark: kvconfig (KeyVault.load and the drop-in source) vs raw HTTP vs the SDK
floor vs pydantic-settings' source.

For each latency (default 0 and 20 ms) runs ``kvconfig emulator --latency-ms L`` as a separate
process, fills vaults of 100 and 1000 secrets, then times cold loads of K secrets (K in 10, 100,
1000), contenders interleaved (rotated order) in one run:

- **raw**: the physical floor. Raw aiohttp: one unauthenticated GET for the 401 challenge, one
  token from the emulator's managed-identity endpoint, then the K GETs with a bearer token over
  32 pooled connections (one SSL context), ``json.loads`` of each body. No SDK, no validation.

- **kvconfig**: ``async with KeyVault(...) as vault: await vault.load(Settings)``;
- **kvconfig drop-in**: ``kvconfig.AzureKeyVaultSettingsSource`` in place of pydantic-settings'
  (same constructor, same ``settings_customise_sources``, the same sync credential, plus
  ``ca_file=``); ``Settings()`` called sync, as users call it (kvconfig runs the reads on its
  private loop thread);
- **pydantic-settings**: its ``AzureKeyVaultSettingsSource`` (sync client, lists the vault, then
  one GET at a time), subclassed only to pass ``verify_challenge_resource=False``; the CA is
  trusted through ``REQUESTS_CA_BUNDLE`` as the emulator exports it;
- **sdk get_secret**: the SDK floor. A priming ``get_secret`` plus ``asyncio.gather`` of the
  other K-1 on one aio ``SecretClient`` (own session limited to 32 connections, one SSL context,
  ``trust_env=False``), no validation.
- **sdk send_request**: the same, but each GET through ``client.send_request(HttpRequest(...))``
  and ``json.loads`` instead of ``get_secret``'s model deserialisation.

Beside them, at K=100, kvconfig with several vaults (``--vault shared`` on the same emulator):

- **kvconfig, two vaults (70/30)**: 70 fields in the primary vault, 30 pinned with
  ``Secret(vault="shared")``; each vault primes once, one ``max_concurrency`` for the load;
- **kvconfig, 30 via a fallback vault**: the primary lacks 30 of the secrets;
  ``fallback_vaults=["shared"]`` reads them there after the primary's 404 (one extra GET and one
  round trip for each);
- **kvconfig, prefix chain, all 100 after a 404**: ``prefix=("stg-", "")`` where no ``stg-``
  secret exists, so every field costs a 404 and a second GET (the worst case of a chain).

Every load is cold: a new credential (the emulator's managed-identity endpoint, through
``azure.identity``; raw: one plain GET to it), a new client and an empty challenge cache. Wall
time is the median of the runs; CPU is ``time.process_time()`` of this (client) process per
secret, median too. Ratios are to the raw floor of the same case and run set; the last column
is wall time relative to ``KeyVault.load`` (pydantic-settings' value there is how many times
slower than kvconfig it is).

Run (needs the bench extra: ``.venv/bin/pip install -e '.[bench]'``)::

    .venv/bin/python bench/bench_load.py                      # 7 runs, pydantic-settings fewer
    .venv/bin/python bench/bench_load.py --runs 9 --ks 100 1000 --latencies 0
    .venv/bin/python bench/bench_load.py --runs 3 --ps-runs 1 --ps-big-runs 0   # quick look
    .venv/bin/python bench/bench_load.py --ks 100 --latencies 20 --runs 11 --ps-runs 3 \
        --skip "sdk send_request"                                    # several vaults (issue 11)
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import shlex
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import aiohttp
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest
from azure.identity import ManagedIdentityCredential as SyncManagedIdentityCredential
from azure.identity.aio import ManagedIdentityCredential
from azure.keyvault.secrets import ApiVersion
from azure.keyvault.secrets import SecretClient as SyncSecretClient
from azure.keyvault.secrets._shared import HttpChallengeCache
from azure.keyvault.secrets.aio import SecretClient
from pydantic import create_model
from pydantic_settings import AzureKeyVaultSettingsSource, BaseSettings, PydanticBaseSettingsSource

import kvconfig
from kvconfig import KeyVault, Secret

# -- the emulator process ---------------------------------------------------------------------


def start_emulator(latency_ms: float) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start ``kvconfig emulator`` (plus a vault named ``big``) and read its exports."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kvconfig",
            "emulator",
            "--latency-ms",
            str(latency_ms),
            "--vault",
            "big",
            "--vault",
            "shared",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    exports: dict[str, str] = {}
    assert proc.stdout is not None
    while not {"VAULT_URL_BIG", "VAULT_URL_SHARED", "IDENTITY_HEADER"} <= exports.keys():
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator exited before printing its exports")
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").strip().partition("=")
            exports[key] = shlex.split(value)[0] if value else ""
    return proc, exports


async def seed(vault_url: str, ca_file: str, count: int, stem: str = "s") -> list[str]:
    """Create ``count`` secrets ``s-0000``... (32-byte values) through the real API."""
    names = [f"{stem}-{i:04d}" for i in range(count)]
    context = ssl.create_default_context(cafile=ca_file)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
    async with (
        session,
        ManagedIdentityCredential() as credential,
        SecretClient(
            vault_url,
            credential,
            verify_challenge_resource=False,
            transport=AioHttpTransport(session=session, session_owner=False),
        ) as client,
    ):
        limit = asyncio.Semaphore(64)

        async def put(name: str) -> None:
            async with limit:
                await client.set_secret(name, f"value-of-{name}-".ljust(32, "x"))

        await asyncio.gather(*(put(n) for n in names))
    return names


# -- the contenders -----------------------------------------------------------------------------


def field_name(secret_name: str) -> str:
    return secret_name.replace("-", "_")


def kvconfig_settings(names: list[str]) -> type[BaseSettings]:
    fields: dict[str, Any] = {field_name(n): (str, ...) for n in names}
    return create_model("KvSettings", __base__=BaseSettings, **fields)


def two_vault_settings(names: list[str], pinned: list[str]) -> type[BaseSettings]:
    """``names`` from the primary vault, ``pinned`` with ``Secret(vault="shared")``."""
    fields: dict[str, Any] = {field_name(n): (str, ...) for n in names}
    fields.update({field_name(n): (Annotated[str, Secret(vault="shared")], ...) for n in pinned})
    return create_model("TwoVaultSettings", __base__=BaseSettings, **fields)


class _Holder:
    url = ""
    ca_file = ""
    credential: Any = None


class VerifyOffAzureKeyVaultSettingsSource(AzureKeyVaultSettingsSource):
    """pydantic-settings' source, changed only to accept a loopback challenge."""

    def _load_env_vars(self) -> Any:
        from pydantic_settings.sources.providers.azure import AzureKeyVaultMapping

        client = SyncSecretClient(
            vault_url=self._url, credential=self._credential, verify_challenge_resource=False
        )
        return AzureKeyVaultMapping(
            secret_client=client,
            case_sensitive=self.case_sensitive,
            snake_case_conversion=self._snake_case_conversion,
            env_prefix=self.env_prefix,
            env_parse_none_str=self.env_parse_none_str,
        )


def _class_reading_from(
    name: str, names: list[str], source: Callable[[type[BaseSettings]], PydanticBaseSettingsSource]
) -> type[BaseSettings]:
    """A Settings class with one ``str`` field per secret, read by ``source`` after init, env
    and dotenv (pydantic-settings' documented place for a Key Vault source)."""
    fields: dict[str, Any] = {field_name(n): (str, ...) for n in names}
    base = create_model(f"{name}Base", __base__=BaseSettings, **fields)

    class FromSource(base):  # type: ignore[misc,valid-type]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, dotenv_settings, source(settings_cls))

    FromSource.__name__ = FromSource.__qualname__ = name
    return FromSource


def pydantic_settings_class(names: list[str]) -> type[BaseSettings]:
    return _class_reading_from(
        "PsSettings",
        names,
        lambda cls: VerifyOffAzureKeyVaultSettingsSource(
            cls, _Holder.url, _Holder.credential, dash_to_underscore=True
        ),
    )


async def load_kvconfig(
    url: str,
    ca_file: str,
    settings_cls: type[BaseSettings],
    max_concurrency: int | None,
    **options: Any,
) -> None:
    if max_concurrency is not None:
        options["max_concurrency"] = max_concurrency
    async with KeyVault(url, ManagedIdentityCredential(), ca_file=ca_file, **options) as vault:
        settings = await vault.load(settings_cls)
    assert len(settings.model_fields_set) == len(settings_cls.model_fields)


API_VERSION = ApiVersion.V2026_04_01.value
POOL = 32  # connections: kvconfig's default max_concurrency, used by every async contender


def _session(ca_file: str) -> aiohttp.ClientSession:
    context = ssl.create_default_context(cafile=ca_file)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context, limit=POOL),
        trust_env=False,
        auto_decompress=False,
    )


async def load_raw(url: str, ca_file: str, names: list[str]) -> None:
    """The physical floor: the same HTTP work as kvconfig, with nothing but aiohttp."""
    async with _session(ca_file) as session:
        first = f"{url}/secrets/{names[0]}?api-version={API_VERSION}"
        async with session.get(first) as challenge:
            await challenge.read()
            assert challenge.status == 401
            www = challenge.headers["WWW-Authenticate"]
        resource = www.split('resource="', 1)[1].split('"', 1)[0]
        async with session.get(
            os.environ["IDENTITY_ENDPOINT"],
            params={"api-version": "2019-08-01", "resource": resource},
            headers={"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]},
        ) as response:
            token = json.loads(await response.read())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        async def get(name: str) -> str:
            async with session.get(
                f"{url}/secrets/{name}?api-version={API_VERSION}", headers=headers
            ) as response:
                value: str = json.loads(await response.read())["value"]
                return value

        values = await asyncio.gather(*(get(n) for n in names))
    assert len(values) == len(names) and all(values)


async def load_floor(url: str, ca_file: str, names: list[str]) -> None:
    session = _session(ca_file)
    credential = ManagedIdentityCredential()
    client = SecretClient(
        url,
        credential,
        verify_challenge_resource=False,
        transport=AioHttpTransport(session=session, session_owner=False),
    )
    try:
        first = await client.get_secret(names[0])
        rest = await asyncio.gather(*(client.get_secret(n) for n in names[1:]))
        assert first.value and len(rest) == len(names) - 1
    finally:
        await client.close()
        await session.close()
        await credential.close()


async def load_send_request(url: str, ca_file: str, names: list[str]) -> None:
    """The SDK floor with each GET through ``send_request`` + ``json.loads`` (no models)."""
    session = _session(ca_file)
    credential = ManagedIdentityCredential()
    client = SecretClient(
        url,
        credential,
        verify_challenge_resource=False,
        transport=AioHttpTransport(session=session, session_owner=False),
    )

    async def get(name: str) -> str:
        response = await client.send_request(
            HttpRequest("GET", f"{url}/secrets/{name}?api-version={API_VERSION}")
        )
        response.raise_for_status()
        value: str = json.loads(response.content)["value"]
        return value

    try:
        first = await get(names[0])
        rest = await asyncio.gather(*(get(n) for n in names[1:]))
        assert first and len(rest) == len(names) - 1
    finally:
        await client.close()
        await session.close()
        await credential.close()


def dropin_settings_class(names: list[str]) -> type[BaseSettings]:
    """pydantic-settings' usage with the one import changed (plus ``ca_file`` for the emulator)."""
    return _class_reading_from(
        "DropInSettings",
        names,
        lambda cls: kvconfig.AzureKeyVaultSettingsSource(
            cls,
            _Holder.url,
            _Holder.credential,
            dash_to_underscore=True,
            ca_file=_Holder.ca_file,
        ),
    )


def load_pydantic_settings(url: str, settings_cls: type[BaseSettings]) -> None:
    _Holder.url = url
    _Holder.credential = SyncManagedIdentityCredential()
    try:
        settings = settings_cls()
    finally:
        _Holder.credential.close()
    assert len(settings.model_fields_set) == len(settings_cls.model_fields)


# -- timing ---------------------------------------------------------------------------------


@dataclass
class Samples:
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


async def timed(samples: Samples, run: Callable[[], Awaitable[None]]) -> None:
    HttpChallengeCache.clear()  # cold: every contender pays the 401 challenge
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await run()
    samples.wall_ms.append((time.perf_counter() - wall0) * 1000)
    samples.cpu_ms.append((time.process_time() - cpu0) * 1000)


CONTENDERS = [
    "raw",
    "kvconfig",
    "kvconfig drop-in",
    "sdk get_secret",
    "sdk send_request",
    "pydantic-settings",
    "kvconfig, two vaults (70/30)",
    "kvconfig, 30 via a fallback vault",
    "kvconfig, prefix chain, all 100 after a 404",
]

Runner = Callable[[], Awaitable[None]]


def several_vault_runners(
    url: str, ca_file: str, names: list[str], shared: str, only_shared: list[str]
) -> dict[str, Runner]:
    """The several-vault contenders of the K=100 case (see the module docstring)."""
    two = two_vault_settings(names[:70], names[70:])
    fallback = kvconfig_settings(names[:70] + only_shared[:30])
    plain = kvconfig_settings(names)
    return {
        "kvconfig, two vaults (70/30)": lambda: load_kvconfig(
            url, ca_file, two, None, vaults={"shared": shared}
        ),
        "kvconfig, 30 via a fallback vault": lambda: load_kvconfig(
            url, ca_file, fallback, None, fallback_vaults=[shared]
        ),
        "kvconfig, prefix chain, all 100 after a 404": lambda: load_kvconfig(
            url, ca_file, plain, None, prefix=("stg-", "")
        ),
    }


async def bench_case(
    url: str,
    ca_file: str,
    names: list[str],
    runs: int,
    ps_runs: int,
    skip: set[str],
    extra: dict[str, Runner] | None = None,
) -> dict[str, Samples]:
    kv_cls = kvconfig_settings(names)
    dropin_cls = dropin_settings_class(names)
    ps_cls = pydantic_settings_class(names)
    runners: dict[str, Callable[[], Awaitable[None]]] = {
        "raw": lambda: load_raw(url, ca_file, names),
        "kvconfig": lambda: load_kvconfig(url, ca_file, kv_cls, None),
        "sdk get_secret": lambda: load_floor(url, ca_file, names),
        "sdk send_request": lambda: load_send_request(url, ca_file, names),
    }

    async def ps() -> None:
        load_pydantic_settings(url, ps_cls)  # sync, as users call it

    async def dropin() -> None:
        _Holder.ca_file = ca_file
        load_pydantic_settings(url, dropin_cls)  # the same call, kvconfig's source

    runners["kvconfig drop-in"] = dropin
    runners["pydantic-settings"] = ps
    runners.update(extra or {})
    runners = {k: v for k, v in runners.items() if k not in skip}
    results = {name: Samples() for name in runners}
    # One warm-up of each async contender (imports, first TLS context), not recorded.
    for name, run in runners.items():
        if name != "pydantic-settings":
            await run()
    for i in range(runs):
        order = [
            (name, run)
            for name, run in runners.items()
            if name != "pydantic-settings" or i < ps_runs
        ]
        order = order[i % len(order) :] + order[: i % len(order)]  # rotate to spread noise
        for name, run in order:
            await timed(results[name], run)
    return results


def table_rows(latency: float, k: int, results: dict[str, Samples]) -> list[str]:
    raw_wall = statistics.median(results["raw"].wall_ms)
    raw_cpu = statistics.median(results["raw"].cpu_ms)
    kv = results.get("kvconfig")
    kv_wall = statistics.median(kv.wall_ms) if kv is not None and kv.wall_ms else None
    rows = []
    for name, s in results.items():
        if not s.wall_ms:
            continue
        wall = statistics.median(s.wall_ms)
        cpu = statistics.median(s.cpu_ms)
        rows.append(
            f"| {k} | {latency:g} | {name} | {len(s.wall_ms)} | {wall:,.0f} | {cpu / k:.3f} | "
            f"{cpu / raw_cpu:.2f}x | {wall / raw_wall:.2f}x | "
            + (f"{wall / kv_wall:.2f}x |" if kv_wall else "- |")
        )
    return rows


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latencies", type=float, nargs="+", default=[0, 20], metavar="MS")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100, 1000], metavar="K")
    parser.add_argument("--runs", type=int, default=7, help="interleaved runs per contender")
    parser.add_argument("--ps-runs", type=int, default=3, help="pydantic-settings, K <= 100")
    parser.add_argument("--ps-big-runs", type=int, default=1, help="pydantic-settings, K=1000")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=CONTENDERS, help="contenders to leave out"
    )
    parser.add_argument(
        "--chart",
        type=Path,
        metavar="PNG",
        help="also draw the medians as a bar chart (needs matplotlib, in the bench extra)",
    )
    args = parser.parse_args()
    skip = set(args.skip)

    rows = []
    measured: list[tuple[float, int, dict[str, Samples]]] = []
    loads: list[float] = []
    for latency in args.latencies:
        proc, exports = start_emulator(latency)
        try:
            for key in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE"):
                os.environ[key] = exports[key]
            ca_file = exports["REQUESTS_CA_BUNDLE"]
            small_url, big_url = exports["VAULT_URL"], exports["VAULT_URL_BIG"]
            small = await seed(small_url, ca_file, 100) if min(args.ks) <= 100 else []
            big = await seed(big_url, ca_file, 1000) if max(args.ks) > 100 else []
            several: dict[str, Runner] = {}
            if 100 in args.ks:
                # The 30 pinned of the two-vault class, and 30 the primary vault does not have.
                shared = exports["VAULT_URL_SHARED"]
                await seed(shared, ca_file, 100)
                only_shared = await seed(shared, ca_file, 30, stem="f")
                several = several_vault_runners(small_url, ca_file, small, shared, only_shared)
                several = {k: v for k, v in several.items() if k not in skip}
            for k in args.ks:
                url, names = (small_url, small[:k]) if k <= 100 else (big_url, big[:k])
                ps_runs = args.ps_runs if k <= 100 else args.ps_big_runs
                loads.append(os.getloadavg()[0])
                extra = several if k == 100 else None
                results = await bench_case(url, ca_file, names, args.runs, ps_runs, skip, extra)
                rows += table_rows(latency, k, results)
                measured.append((latency, k, results))
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    default_mc = inspect.signature(KeyVault).parameters["max_concurrency"].default
    print(
        f"Cold load, kvconfig default max_concurrency={default_mc}, {POOL} connections for the "
        f"others, {os.cpu_count()} CPUs, load average {min(loads):.1f}-{max(loads):.1f}\n"
    )
    print(
        "| K | latency ms | loader | runs | median wall ms | CPU ms/secret | CPU vs raw "
        "| wall vs raw | wall vs kvconfig |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    if args.chart is not None:
        draw_chart(args.chart, measured)
        print(f"\nchart: {args.chart}")
    return 0


def draw_chart(path: Path, measured: list[tuple[float, int, dict[str, Samples]]]) -> None:
    """Median wall time per loader and case, log scale: the README's picture of the table."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    measured = [m for m in measured if m[1] >= 100]
    loaders = ["raw", "kvconfig", "kvconfig drop-in", "sdk get_secret", "pydantic-settings"]
    colours = {
        "raw": "#888888",
        "kvconfig": "#1a4f80",
        "kvconfig drop-in": "#2b7bba",
        "sdk get_secret": "#9bbbd4",
        "pydantic-settings": "#d95f02",
    }
    fig, axes = plt.subplots(1, len(measured), figsize=(4.2 * len(measured), 3.2), squeeze=False)
    for ax, (latency, k, results) in zip(axes[0], measured, strict=True):
        names = [name for name in loaders if name in results and results[name].wall_ms]
        medians = [statistics.median(results[name].wall_ms) for name in names]
        bars = ax.barh(names, medians, color=[colours[name] for name in names])
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(f"cold load, K={k}, {latency:g} ms latency", fontsize=10)
        ax.set_xlabel("median wall time, ms (log scale)")
        for bar, value in zip(bars, medians, strict=True):
            ax.text(value, bar.get_y() + bar.get_height() / 2, f" {value:,.0f} ms", va="center")
        ax.set_xlim(left=10, right=max(medians) * 6)  # a common origin keeps bars comparable
    fig.suptitle("Emulator in its own process", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
