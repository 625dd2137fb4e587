"""Several vaults: which vault(s) and names each planned secret is read from, and reading them.

A layer above the per-vault :class:`~kvconfig._fetch.SecretFetcher` (whose ``fetch(refs)``
contract it uses unchanged):

- :class:`VaultSet` is the configuration: the primary vault, aliases (``vaults={...}``) and
  fallback vaults. :meth:`VaultSet.route` fills each :class:`~kvconfig._names.PlannedSecret`'s
  ``vaults``: the vault it is pinned to by ``Secret(vault=...)``, else the primary vault then
  each fallback. Its *candidates* are every name of its prefix chain in the first vault, then
  every name in the next vault, and so on.
- :class:`VaultPool` owns, per vault URL, one aiohttp session, one ``SecretClient`` and one
  fetcher, all created on first use; one credential, one SSL context, one TTL cache and one
  limit on requests in flight (``max_concurrency``) are shared by every vault.
- :func:`read_chains` reads chains of candidates: the first candidate of every chain at once
  (grouped by vault, every vault concurrently, each vault primed on its own), then, only for
  chains whose answer was a 404, the next candidate, and so on. A chain with one candidate costs
  exactly one GET; each further step costs one GET and one round trip, only after a 404.

A disabled secret ends its chain (it is treated as missing, with a warning, as in one vault): a
secret switched off on purpose is not silently replaced by another vault's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.keyvault.secrets.aio import SecretClient

from kvconfig._cache import SecretCache
from kvconfig._client import VaultClients, build_clients, build_session, signalling, vault_host
from kvconfig._errors import ClosedError, ConfigurationError
from kvconfig._fetch import SecretFetcher
from kvconfig._model import FetchedSecret, FetchResult, SecretStatus
from kvconfig._names import PlannedSecret, SecretRef, SettingsPlan
from kvconfig._references import KeyVaultReference, vault_url_for_name
from kvconfig._retry import RetryPolicy

__all__ = [
    "Candidate",
    "ReadResult",
    "Resolution",
    "VaultPool",
    "VaultSet",
    "canonical_url",
    "chain",
    "read_chains",
    "used_vaults",
]

T = TypeVar("T")


def canonical_url(url: str) -> str:
    """``url`` without a trailing slash, lower-cased (vault URLs have no path); validated."""
    url = url.strip().rstrip("/")
    vault_host(url)  # an absolute https URL, or ConfigurationError
    return url.lower()


class Candidate(NamedTuple):
    """One place a value may be read from: a vault and a secret (name, version)."""

    vault_url: str
    ref: SecretRef

    @property
    def key(self) -> tuple[str, str, str | None]:
        """Case-insensitive identity across vaults."""
        return (self.vault_url, *self.ref.key)


@dataclass(frozen=True, slots=True)
class VaultSet:
    """The vaults a :class:`~kvconfig.KeyVault` reads from. See the module docstring.

    Attributes:
        primary: The vault every unpinned field is read from first (canonical URL).
        aliases: Lower-cased alias -> canonical URL.
        fallbacks: Canonical URLs tried, in order, for unpinned fields the primary lacks.
    """

    primary: str
    aliases: Mapping[str, str]
    fallbacks: tuple[str, ...]

    @classmethod
    def build(
        cls,
        primary: str,
        vaults: Mapping[str, str] | None = None,
        fallback_vaults: Sequence[str] | None = None,
    ) -> VaultSet:
        """Validate the configuration (:class:`ConfigurationError` naming the bad entry)."""
        primary = canonical_url(primary)
        aliases: dict[str, str] = {}
        for alias, url in (vaults or {}).items():
            if not isinstance(alias, str) or not alias or "://" in alias:
                raise ConfigurationError(f"vaults: {alias!r} is not an alias (a short name)")
            try:
                aliases[alias.lower()] = canonical_url(url)
            except ConfigurationError as exc:
                raise ConfigurationError(f"vaults[{alias!r}]: {exc}") from None
        if isinstance(fallback_vaults, str):
            raise ConfigurationError("fallback_vaults must be a list of vault URLs or aliases")
        fallbacks: list[str] = []
        partial = cls(primary, aliases, ())
        for spec in fallback_vaults or ():
            url = partial.resolve(spec, what="fallback_vaults entry")
            if url != primary and url not in fallbacks:
                fallbacks.append(url)
        return cls(primary, aliases, tuple(fallbacks))

    def resolve(self, spec: str, *, what: str = "vault") -> str:
        """The canonical URL of ``spec`` (a URL or an alias)."""
        if "://" in spec:
            return canonical_url(spec)
        url = self.aliases.get(spec.lower())
        if url is None:
            known = ", ".join(sorted(self.aliases)) or "none"
            raise ConfigurationError(
                f"{what} {spec!r} is not a vault URL and not an alias defined in "
                f"KeyVault(vaults=...) (aliases: {known})"
            )
        return url

    def by_vault_name(self, name: str) -> str | None:
        """The URL a bare vault name (``VaultName=`` of a reference) means here, if known.

        An alias of that name wins, then a configured vault whose host starts with
        ``<name>.``; ``None`` when neither matches.
        """
        name = name.lower()
        if name in self.aliases:
            return self.aliases[name]
        for url in (self.primary, *self.fallbacks, *self.aliases.values()):
            host = vault_host(url)
            if host.split(".", 1)[0] == name and "." in host:
                return url
        return None

    def for_reference(self, reference: KeyVaultReference) -> Candidate:
        """Where a Key Vault reference points: its ``SecretUri`` vault, or for ``VaultName=``
        an alias or configured vault of that name, else ``https://<name>.vault.azure.net`` (in
        the primary vault's cloud)."""
        if reference.by_name:
            url = self.by_vault_name(reference.vault) or vault_url_for_name(
                reference.vault, self.primary
            )
        else:
            url = canonical_url(reference.vault)
        return Candidate(url, SecretRef(reference.name, reference.version))

    @property
    def all(self) -> tuple[str, ...]:
        """Every configured vault URL, primary first, without repeats."""
        return tuple(dict.fromkeys((self.primary, *self.fallbacks, *self.aliases.values())))

    def vaults_for(self, planned: PlannedSecret) -> tuple[str, ...]:
        """The vault URLs ``planned`` is read from, in order."""
        if planned.vault is not None:
            return (self.resolve(planned.vault, what=f'vault of field "{planned.field}":'),)
        return (self.primary, *self.fallbacks)

    def route(self, plan: SettingsPlan) -> SettingsPlan:
        """``plan`` with every planned secret's ``vaults`` filled in. No I/O."""
        return dataclasses.replace(
            plan,
            secrets=tuple(dataclasses.replace(s, vaults=self.vaults_for(s)) for s in plan.secrets),
        )


def chain(planned: PlannedSecret) -> tuple[Candidate, ...]:
    """The candidates of a routed planned secret, in the order they are tried."""
    return tuple(
        Candidate(vault, SecretRef(name, planned.version)) for vault, name in planned.candidates
    )


class VaultPool:
    """Per vault URL: one session, one ``SecretClient``, one fetcher. Shared: the credential,
    the SSL context, the cache and the limit on requests in flight. Open vaults on first use
    (inside the running loop); :meth:`aclose` closes every one (not the credential)."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        ssl_context: ssl.SSLContext,
        *,
        cache: SecretCache,
        max_concurrency: int,
        startup_timeout: float,
        request_timeout: float,
        retry: RetryPolicy,
        trust_env: bool,
        api_version: str | None,
    ) -> None:
        self._credential = credential
        self._ssl_context = ssl_context
        self._max_concurrency = max_concurrency
        self._startup_timeout = startup_timeout
        self._request_timeout = request_timeout
        self._retry = retry
        self._trust_env = trust_env
        self._api_version = api_version
        self.cache = cache
        self._semaphore: asyncio.Semaphore | None = None
        self._vaults: dict[str, tuple[aiohttp.ClientSession, VaultClients, SecretFetcher]] = {}
        self._closed = False

    @property
    def startup_timeout(self) -> float:
        return self._startup_timeout

    @property
    def opened(self) -> tuple[str, ...]:
        """The vault URLs opened so far."""
        return tuple(self._vaults)

    def _vault(self, url: str) -> tuple[aiohttp.ClientSession, VaultClients, SecretFetcher]:
        if self._closed:
            raise ClosedError(f"KeyVault({url!r}) is closed")
        url = canonical_url(url)
        opened = self._vaults.get(url)
        if opened is None:
            if self._semaphore is None:
                self._semaphore = asyncio.Semaphore(self._max_concurrency)
            session = build_session(
                self._ssl_context, limit=self._max_concurrency, trust_env=self._trust_env
            )
            # One wrapper per vault: each client pays its own challenge, so each vault primes.
            credential = signalling(self._credential, url)
            clients = build_clients(
                url,
                credential,
                session,
                trust_env=self._trust_env,
                api_version=self._api_version,
            )
            fetcher = SecretFetcher(
                clients.reader,
                vault_url=url,
                cache=self.cache,
                max_concurrency=self._max_concurrency,
                startup_timeout=self._startup_timeout,
                request_timeout=self._request_timeout,
                retry=self._retry,
                token_ready=credential.token_ready,
                semaphore=self._semaphore,
            )
            opened = (session, clients, fetcher)
            self._vaults[url] = opened
        return opened

    def fetcher(self, url: str) -> SecretFetcher:
        """The fetcher of vault ``url`` (opened now if needed)."""
        return self._vault(url)[2]

    def session(self, url: str) -> aiohttp.ClientSession:
        """The aiohttp session of vault ``url`` (opened now if needed)."""
        return self._vault(url)[0]

    def client(self, url: str) -> SecretClient:
        """The SDK client of vault ``url`` (opened now if needed)."""
        return self._vault(url)[1].secrets

    async def aclose(self) -> None:
        """Cancel requests in flight, close every client and session. Idempotent."""
        if self._closed:
            return
        self._closed = True
        vaults = list(self._vaults.values())
        errors: list[BaseException] = []
        for _, clients, fetcher in vaults:
            try:
                await fetcher.aclose()
                await clients.close()
            except Exception as exc:  # close every vault, then report
                errors.append(exc)
        for session, _, _ in vaults:
            await session.close()
        if errors:
            raise errors[0]


@dataclass(frozen=True, slots=True)
class Resolution:
    """How one chain ended.

    Attributes:
        secret: The answer that decided: the first found (or disabled) candidate, else the last
            candidate's 404.
        candidate: Where ``secret`` came from.
        tried: The candidates read, in order; ``candidate`` is the last.
    """

    secret: FetchedSecret
    candidate: Candidate
    tried: tuple[Candidate, ...]

    @property
    def vault_url(self) -> str:
        return self.candidate.vault_url


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What :func:`read_chains` read.

    Attributes:
        resolutions: One per chain, in order.
        observed: Every answer, by candidate (pinned versions included).
        requests: HTTP requests sent (retries included; shared or cached answers not counted).
        cache_hits: Answers served from the cache.
        joined: Answers shared with a request already in flight.
        rounds: Rounds of requests (1 when no chain went past its first candidate).
    """

    resolutions: tuple[Resolution, ...]
    observed: Mapping[Candidate, FetchedSecret]
    requests: int
    cache_hits: int
    joined: int
    rounds: int


async def read_chains(
    pool: VaultPool,
    chains: Sequence[Sequence[Candidate]],
    *,
    max_age: float | None = None,
    timeout: float | None = None,
    known: Mapping[Candidate, FetchedSecret] | None = None,
    strict: bool = True,
) -> ReadResult:
    """Resolve every chain: each candidate read only once the previous one answered 404.

    ``known`` answers are used as if read (not counted). ``timeout`` (default: the startup
    timeout) bounds the whole read, every round included; ``strict`` as for
    :meth:`~kvconfig._fetch.SecretFetcher.fetch` (``False`` on refresh).

    Raises:
        VaultError: a permanent error from any vault (the other vaults' requests are cancelled),
            or :class:`~kvconfig.VaultUnavailableError` naming the vault whose transient
            failures outlasted the timeout.
    """
    deadline = time.monotonic() + (pool.startup_timeout if timeout is None else timeout)
    observed: dict[Candidate, FetchedSecret] = dict(known or {})
    by_key: dict[tuple[str, str, str | None], FetchedSecret] = {
        c.key: s for c, s in observed.items()
    }
    positions = [0] * len(chains)
    requests = cache_hits = joined = rounds = 0
    while True:
        need: dict[str, dict[tuple[str, str | None], Candidate]] = {}
        for index, candidates in enumerate(chains):
            while positions[index] < len(candidates):
                candidate = candidates[positions[index]]
                answer = by_key.get(candidate.key)
                if answer is None:
                    need.setdefault(candidate.vault_url, {})[candidate.ref.key] = candidate
                    break
                if answer.status is SecretStatus.MISSING and positions[index] + 1 < len(candidates):
                    positions[index] += 1
                    continue
                break
        if not need:
            break
        rounds += 1
        remaining = max(0.0, deadline - time.monotonic())
        results = await _fetch_vaults(pool, need, max_age=max_age, timeout=remaining, strict=strict)
        for url, result in results.items():
            requests += result.requests
            cache_hits += result.cache_hits
            joined += result.joined
            for candidate in need[url].values():
                answer = result.secrets[candidate.ref.key]
                observed[candidate] = answer
                by_key[candidate.key] = answer
    resolutions: list[Resolution] = []
    for index, candidates in enumerate(chains):
        last = positions[index]
        tried = tuple(candidates[: last + 1])
        resolutions.append(Resolution(by_key[tried[-1].key], tried[-1], tried))
    return ReadResult(tuple(resolutions), observed, requests, cache_hits, joined, rounds)


async def _fetch_vaults(
    pool: VaultPool,
    need: Mapping[str, Mapping[tuple[str, str | None], Candidate]],
    *,
    max_age: float | None,
    timeout: float,
    strict: bool,
) -> dict[str, FetchResult]:
    """One ``fetch()`` per vault, all concurrently; the first error cancels the others."""
    fetchers = {url: pool.fetcher(url) for url in need}
    if len(need) == 1:
        ((url, wanted),) = need.items()
        result = await fetchers[url].fetch(
            [c.ref for c in wanted.values()], max_age=max_age, timeout=timeout, strict=strict
        )
        return {url: result}
    return await all_or_none(
        {
            url: fetchers[url].fetch(
                [c.ref for c in wanted.values()], max_age=max_age, timeout=timeout, strict=strict
            )
            for url, wanted in need.items()
        }
    )


async def all_or_none(coros: Mapping[str, Coroutine[Any, Any, T]]) -> dict[str, T]:
    """Run one coroutine per vault concurrently; the first error cancels (and awaits) the
    others and is raised. Every vault's result otherwise."""
    tasks = {url: asyncio.ensure_future(coro) for url, coro in coros.items()}
    try:
        pending: set[asyncio.Future[T]] = set(tasks.values())
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    return {url: task.result() for url, task in tasks.items()}


def used_vaults(plan: SettingsPlan, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Every vault URL a routed plan (and ``extra``) may read, in first-use order."""
    return tuple(dict.fromkeys([*(v for s in plan.secrets for v in s.vaults), *extra]))
