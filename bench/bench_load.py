"""Cold-load benchmark: kvconfig vs pydantic-settings' AzureKeyVaultSettingsSource vs the floor.

Runs ``kvconfig emulator --latency-ms 20`` as a separate process, fills a vault of N secrets,
then times cold loads of a Settings class with K string fields, side by side in one run:

- **kvconfig**: ``async with KeyVault(...) as vault: await vault.load(Settings)``;
- **pydantic-settings**: its ``AzureKeyVaultSettingsSource`` (sync client, lists the vault, then
  one GET at a time), subclassed only to pass ``verify_challenge_resource=False``; the CA is
  trusted through ``REQUESTS_CA_BUNDLE`` as the emulator exports it;
- **floor**: a hand-written priming ``get_secret`` plus ``asyncio.gather`` of the other K-1 on
  one pooled aio ``SecretClient`` (own session, one SSL context, ``trust_env=False``), no
  validation.

Beside them, at K=100, kvconfig with several vaults (``--vault shared`` on the same emulator):

- **two vaults, 70/30**: 70 fields in the primary vault, 30 pinned with
  ``Secret(vault="shared")``; each vault primes once, one ``max_concurrency`` for the load;
- **30 via a fallback**: the primary lacks 30 of the secrets; ``fallback_vaults=["shared"]``
  reads them there after the primary's 404 (one extra GET and one round trip for each);
- **prefix chain, all after a 404**: ``prefix=("stg-", "")`` where no ``stg-`` secret exists,
  so every field costs a 404 and a second GET (the worst case of a chain).

Every load is cold: a new credential (the emulator's managed-identity endpoint, through
``azure.identity``), a new client and an empty challenge cache. Wall time is the median of the
runs; CPU is ``time.process_time()`` of this (client) process per secret, median too.

Run (needs the bench extra: ``.venv/bin/pip install -e '.[bench]'``)::

    .venv/bin/python bench/bench_load.py            # K=100 of N=200, and K=1000 of N=1000
    .venv/bin/python bench/bench_load.py --runs 9 --big-runs 3 --also-concurrency 16 32 128
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
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
from azure.identity import ManagedIdentityCredential as SyncManagedIdentityCredential
from azure.identity.aio import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient as SyncSecretClient
from azure.keyvault.secrets._shared import HttpChallengeCache
from azure.keyvault.secrets.aio import SecretClient
from pydantic import create_model
from pydantic_settings import AzureKeyVaultSettingsSource, BaseSettings, PydanticBaseSettingsSource

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


# -- the three contenders ---------------------------------------------------------------------


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


def pydantic_settings_class(names: list[str]) -> type[BaseSettings]:
    fields: dict[str, Any] = {field_name(n): (str, ...) for n in names}
    base = create_model("PsBase", __base__=BaseSettings, **fields)

    class PsSettings(base):  # type: ignore[misc,valid-type]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            source = VerifyOffAzureKeyVaultSettingsSource(
                settings_cls, _Holder.url, _Holder.credential, dash_to_underscore=True
            )
            return (init_settings, env_settings, dotenv_settings, source)

    return PsSettings


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


async def load_floor(url: str, ca_file: str, names: list[str]) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context), trust_env=False, auto_decompress=False
    )
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


def kv_runner(
    url: str, ca_file: str, cls: type[BaseSettings], mc: int | None
) -> Callable[[], Awaitable[None]]:
    return lambda: load_kvconfig(url, ca_file, cls, mc)


Runner = Callable[[], Awaitable[None]]


def several_vault_runners(
    url: str, ca_file: str, names: list[str], shared: str, fallback_names: list[str]
) -> dict[str, Runner]:
    """The several-vault contenders of a K-field case (see the module docstring)."""
    k = len(names)
    split = k * 7 // 10
    two = two_vault_settings(names[:split], names[split:])
    fallback = kvconfig_settings(names[:split] + fallback_names[: k - split])
    plain = kvconfig_settings(names)
    aliases = {"vaults": {"shared": shared}}
    return {
        f"kvconfig, two vaults ({split}/{k - split})": lambda: load_kvconfig(
            url, ca_file, two, None, **aliases
        ),
        f"kvconfig, {k - split} via a fallback vault": lambda: load_kvconfig(
            url, ca_file, fallback, None, fallback_vaults=[shared]
        ),
        f"kvconfig, prefix chain, all {k} after a 404": lambda: load_kvconfig(
            url, ca_file, plain, None, prefix=("stg-", "")
        ),
    }


async def bench_case(
    url: str,
    ca_file: str,
    names: list[str],
    runs: int,
    ps_runs: int,
    variants: list[int],
    extra: dict[str, Runner] | None = None,
) -> dict[str, Samples]:
    kv_cls = kvconfig_settings(names)
    ps_cls = pydantic_settings_class(names)
    extra = extra or {}
    results = {"kvconfig": Samples(), "floor": Samples(), "pydantic-settings": Samples()}
    results.update({f"kvconfig, max_concurrency={mc}": Samples() for mc in variants})
    results.update({name: Samples() for name in extra})

    async def ps() -> None:
        load_pydantic_settings(url, ps_cls)  # sync, as users call it

    # One warm-up of each (imports, first TLS context), not recorded.
    await load_kvconfig(url, ca_file, kv_cls, None)
    await load_floor(url, ca_file, names)
    for run in extra.values():
        await run()
    for i in range(runs):
        order = [
            ("kvconfig", kv_runner(url, ca_file, kv_cls, None)),
            ("floor", lambda: load_floor(url, ca_file, names)),
        ]
        order += [
            (f"kvconfig, max_concurrency={mc}", kv_runner(url, ca_file, kv_cls, mc))
            for mc in variants
        ]
        order += list(extra.items())
        if i < ps_runs:
            order.append(("pydantic-settings", ps))
        order = order[i % len(order) :] + order[: i % len(order)]  # rotate to spread noise
        for name, run in order:
            await timed(results[name], run)
    return results


def table_rows(k: int, n: int, results: dict[str, Samples]) -> list[str]:
    kv = statistics.median(results["kvconfig"].wall_ms)
    rows = []
    for name, s in results.items():
        if not s.wall_ms:
            continue
        wall = statistics.median(s.wall_ms)
        cpu = statistics.median(s.cpu_ms) / k
        rows.append(
            f"| {k} | {n} | {name} | {len(s.wall_ms)} | {wall:,.0f} | {cpu:.2f} | "
            f"{wall / kv:.2f}x |"
        )
    return rows


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--runs", type=int, default=7, help="runs per contender (K=100)")
    parser.add_argument("--big-runs", type=int, default=5, help="runs for K=1000 (0: skip)")
    parser.add_argument("--ps-big-runs", type=int, default=2, help="pydantic-settings, K=1000")
    parser.add_argument(
        "--also-concurrency",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also time kvconfig with these max_concurrency values (default: the library's)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        metavar="PNG",
        help="also draw the medians as a bar chart (needs matplotlib, in the bench extra)",
    )
    args = parser.parse_args()

    proc, exports = start_emulator(args.latency_ms)
    try:
        for key in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE"):
            os.environ[key] = exports[key]
        ca_file = exports["REQUESTS_CA_BUNDLE"]
        small = await seed(exports["VAULT_URL"], ca_file, 200)
        shared = exports["VAULT_URL_SHARED"]
        # The pinned 30 of the two-vault class, and 30 the primary vault does not have.
        await seed(shared, ca_file, 100)
        only_shared = await seed(shared, ca_file, 30, stem="f")
        several = several_vault_runners(
            exports["VAULT_URL"], ca_file, small[:100], shared, only_shared
        )
        cases = [(exports["VAULT_URL"], small[:100], 200, args.runs, args.runs, several)]
        if args.big_runs:
            big = await seed(exports["VAULT_URL_BIG"], ca_file, 1000)
            cases.append((exports["VAULT_URL_BIG"], big, 1000, args.big_runs, args.ps_big_runs, {}))
        rows = []
        measured: list[tuple[int, int, dict[str, Samples]]] = []
        for url, names, n, runs, ps_runs, extra in cases:
            results = await bench_case(
                url, ca_file, names, runs, ps_runs, args.also_concurrency, extra
            )
            rows += table_rows(len(names), n, results)
            measured.append((len(names), n, results))
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    default_mc = inspect.signature(KeyVault).parameters["max_concurrency"].default
    print(
        f"Cold load, emulator latency {args.latency_ms:g} ms, kvconfig default max_concurrency="
        f"{default_mc}, {os.cpu_count()} CPUs\n"
    )
    print(
        "| K fields | N in vault | loader | runs | median wall ms | CPU ms/secret | vs kvconfig |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    if args.chart is not None:
        draw_chart(args.chart, measured, args.latency_ms)
        print(f"\nchart: {args.chart}")
    return 0


def draw_chart(
    path: Path, measured: list[tuple[int, int, dict[str, Samples]]], latency: float
) -> None:
    """Median wall time per loader and case, log scale: the README's picture of the table."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    loaders = ["kvconfig", "floor", "pydantic-settings"]
    colours = {"kvconfig": "#2b7bba", "floor": "#9bbbd4", "pydantic-settings": "#d95f02"}
    fig, axes = plt.subplots(1, len(measured), figsize=(4.2 * len(measured), 3.2), squeeze=False)
    for ax, (k, n, results) in zip(axes[0], measured, strict=True):
        names = [name for name in loaders if results[name].wall_ms]
        medians = [statistics.median(results[name].wall_ms) for name in names]
        bars = ax.barh(names, medians, color=[colours[name] for name in names])
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(f"cold load, K={k} fields, N={n} in vault", fontsize=10)
        ax.set_xlabel("median wall time, ms (log scale)")
        for bar, value in zip(bars, medians, strict=True):
            ax.text(value, bar.get_y() + bar.get_height() / 2, f" {value:,.0f} ms", va="center")
        ax.set_xlim(left=10, right=max(medians) * 6)  # a common origin keeps bars comparable
    fig.suptitle(f"Emulator in its own process, {latency:g} ms latency per request", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
