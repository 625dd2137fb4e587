"""Where the client CPU of one cold kvconfig load goes, by layer.

Starts ``kvconfig emulator`` in its own process (so only client CPU is profiled), seeds K
secrets, does one warm-up load, then profiles one cold ``KeyVault.load`` of K secrets with
cProfile and sums each function's *own* time (``tottime``) into the layer its file belongs to.

Run::

    .venv/bin/python bench/profile_load.py                 # K=1000, latency 0
    .venv/bin/python bench/profile_load.py --k 100 --latency-ms 20 --top 15
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from azure.keyvault.secrets._shared import HttpChallengeCache
from bench_load import kvconfig_settings, load_kvconfig, seed, start_emulator

# First match wins: (layer, substring of the function's file path).
LAYERS: list[tuple[str, str]] = [
    ("SDK deserialisation", "keyvault/secrets/_generated/_utils"),
    ("SDK deserialisation", "keyvault/secrets/_generated/models"),
    ("SDK deserialisation", "keyvault/secrets/_models"),
    ("SDK deserialisation", "azure/core/serialization"),
    ("SDK operations + challenge policy", "azure/keyvault/"),
    ("azure-core policies", "azure/core/pipeline/policies"),
    ("azure-core pipeline, transport, rest", "azure/core/"),
    ("azure-identity", "azure/identity/"),
    ("aiohttp", "/aiohttp/"),
    ("aiohttp", "/multidict/"),
    ("aiohttp", "/yarl/"),
    ("ssl", "/ssl.py"),
    ("ssl", "<method '"),
    ("event loop", "/asyncio/"),
    ("pydantic-settings build", "/pydantic_settings/"),
    ("pydantic-settings build", "/pydantic/"),
    ("pydantic-settings build", "/pydantic_core/"),
    ("kvconfig", "/kvconfig/"),
    ("json", "/json/"),
    ("stdlib (uuid, typing, urllib, os.environ, ...)", "/lib/python3"),
    ("stdlib (uuid, typing, urllib, os.environ, ...)", "<frozen"),
]


def layer_of(filename: str, funcname: str) -> str:
    if filename == "~":  # a builtin: attribute ssl and the selector, the rest is "builtins"
        if "_ssl" in funcname or "SSLObject" in funcname:
            return "ssl"
        if "select" in funcname or "epoll" in funcname:
            return "event loop"
        if "_socket.socket" in funcname:
            return "socket syscalls"
        return "builtins (C)"
    for layer, needle in LAYERS:
        if needle in filename:
            return layer
    return "other"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--top", type=int, default=0, help="also print the N costliest functions")
    args = parser.parse_args()

    proc, exports = start_emulator(args.latency_ms)
    try:
        for key in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE"):
            os.environ[key] = exports[key]
        ca_file = exports["REQUESTS_CA_BUNDLE"]
        url = exports["VAULT_URL_BIG"]
        names = await seed(url, ca_file, args.k)
        cls = kvconfig_settings(names)

        async def load() -> None:
            await load_kvconfig(url, ca_file, cls, None)

        await load()  # warm-up: imports, first contexts
        HttpChallengeCache.clear()
        profiler = cProfile.Profile(time.process_time)  # CPU, not wall
        profiler.enable()
        await load()
        profiler.disable()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    stats = pstats.Stats(profiler)
    by_layer: dict[str, float] = defaultdict(float)
    rows = []
    for (filename, _line, funcname), entry in stats.stats.items():  # type: ignore[attr-defined]
        tottime = entry[2]
        by_layer[layer_of(filename, funcname)] += tottime
        rows.append((tottime, f"{filename}:{funcname}"))
    total = sum(by_layer.values())
    print(f"One cold load of K={args.k}, latency {args.latency_ms:g} ms: {total * 1000:,.0f} ms")
    print("CPU under cProfile (process time, inflated by the profiler: shares are what matter)\n")
    print("| layer | ms | share |")
    print("|---|---:|---:|")
    for layer, seconds in sorted(by_layer.items(), key=lambda item: -item[1]):
        print(f"| {layer} | {seconds * 1000:,.0f} | {seconds / total:.1%} |")
    if args.top:
        print()
        for tottime, where in sorted(rows, reverse=True)[: args.top]:
            print(f"{tottime * 1000:8.1f} ms  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
