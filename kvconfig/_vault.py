"""``KeyVault``: loads Settings classes from a vault (and its aliased and fallback vaults).

Internals (for code building on this module, e.g. refresh, the drop-in source):

- :class:`VaultLink` is the contract a refresher drives a vault through: ``fetcher()``,
  ``client()``, ``load()`` (the one load path), ``build()``, ``closed``. ``LiveSettings`` uses
  nothing else.
- ``KeyVault._open()`` returns the :class:`kvconfig._fetch.SecretFetcher`, which owns the client
  calls, priming, single-flight and the :class:`~kvconfig._cache.SecretCache`
  (``fetcher.cache``). ``await fetcher.fetch(refs, max_age=0)`` re-reads bypassing the cache;
  results are :class:`~kvconfig._model.FetchedSecret` keyed by ``SecretRef.key``. Retries
  follow :class:`kvconfig._retry.RetryPolicy` (``KeyVault.retry_policy``).
- :func:`kvconfig._names.plan_settings` maps a Settings class to its
  :class:`~kvconfig._names.SettingsPlan` (cached); :func:`kvconfig._build.needed_plan` drops
  what a higher-priority source supplies; ``plan.refs`` is what to fetch.
- :func:`kvconfig._build.build_settings` turns a plan plus fetched secrets into a validated
  Settings instance (pydantic-settings precedence, kvconfig errors); it does no I/O.
- Several vaults (:mod:`kvconfig._routing`): ``KeyVault._pool`` holds one client, session and
  fetcher per vault; ``KeyVault._fetcher``/``_client`` are the primary vault's. ``plan()``
  returns the *routed* plan (each planned secret's ``vaults`` filled in); loads read every
  planned secret along its chain of (vault, name) candidates with
  :func:`kvconfig._routing.read_chains`, Key Vault references in the same rounds;
  ``VaultLink.pool()`` gives a refresher every vault's fetcher and client.
- Everything is created lazily on first use inside the running loop (``_open()``), so a
  ``KeyVault`` can be constructed anywhere; when that loop shuts down, its session is closed and
  the next loop gets new ones (the cache is kept).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import aiohttp
from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.keyvault.secrets.aio import SecretClient
from pydantic_settings import BaseSettings

from kvconfig._build import build_settings, log_load, needed_plan, source_list
from kvconfig._cache import SecretCache
from kvconfig._client import build_ssl_context, vault_host
from kvconfig._credentials import as_async
from kvconfig._errors import (
    ClosedError,
    ConfigurationError,
    KeyVaultReferenceError,
    SettingsValidationError,
    VaultError,
    VaultPermissionError,
)
from kvconfig._fetch import SecretFetcher
from kvconfig._model import FetchedSecret, SecretStatus
from kvconfig._names import (
    SecretRef,
    SettingsPlan,
    is_valid_secret_name,
    normalize_prefix,
    plan_settings,
)
from kvconfig._references import FoundReference, find_references, shown
from kvconfig._refresh._listing import ListForbidden, list_secrets
from kvconfig._retry import RetryPolicy
from kvconfig._routing import (
    Candidate,
    ReadResult,
    Resolution,
    VaultPool,
    VaultSet,
    all_or_none,
    chain,
    read_chains,
)
from kvconfig._telemetry import telemetry

if TYPE_CHECKING:
    from kvconfig._refresh._detect import NotYetValid, OnMissing
    from kvconfig._refresh._watch import ChangeCallback, ErrorCallback, LiveSettings

__all__ = ["KeyVault"]

logger = logging.getLogger("kvconfig")

SettingsT = TypeVar("SettingsT", bound=BaseSettings)
Key = tuple[str, str | None]


def _seconds(value: float | timedelta, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ConfigurationError(f"{name} must not be negative, got {seconds}")
    return seconds


class KeyVault:
    """An Azure Key Vault to load pydantic-settings classes from.

    ::

        async with KeyVault(vault_url, DefaultAzureCredential()) as vault:
            settings = await vault.load(Settings)

    Args:
        vault_url: ``https://<name>.vault.azure.net`` (or an emulator's URL).
        credential: An ``azure.identity.aio`` credential, or a sync one
            (``azure.identity.DefaultAzureCredential()``), whose ``get_token`` then runs in a
            thread. An aio credential's HTTP session is bound to the event loop it first ran
            on: to use one ``KeyVault`` across several ``asyncio.run()`` calls, pass a sync one.
        ca_file: PEM file of an extra CA to trust (the emulator, a TLS-inspecting proxy).
        ssl_context: A ready client SSL context instead of ``ca_file``.
        vaults: Aliases for ``Secret(vault="alias")``: ``{"shared": "https://..."}``.
        fallback_vaults: Vault URLs (or aliases) in which a secret the primary vault does not
            have (404) is looked up, in order; the first that has it wins. Fields pinned with
            ``Secret(vault=...)`` are read from their vault only.
        prefix: Prepended to every field-derived secret name (``"prod-"``); not to explicit
            ``Secret("name")`` names. A sequence is a chain tried in order:
            ``("stg-", "")`` reads ``stg-queue-name``, then ``queue-name`` after a 404.
        max_concurrency: Requests in flight at most (also the connection pool size). Each
            connection costs a TLS handshake, so more is not faster once the client is
            CPU-bound; 32 measured best for 100 secrets on 2 cores (``bench/``).
        ttl: Seconds (or ``timedelta``) a fetched secret is reused by later loads; ``0``
            disables the cache. Concurrent loads always share requests in flight.
        startup_timeout: How long transient failures (429, 5xx, network) are retried before
            :class:`~kvconfig.VaultUnavailableError`.
        request_timeout: Connect and read timeout of one request, in seconds.
        retry_backoff: First backoff ceiling (doubles per attempt, full jitter, capped by
            ``retry_backoff_max``); a ``Retry-After`` from the vault lengthens a wait, never
            shortens it.
        retry_backoff_max: Largest backoff ceiling.
        close_credential: Close ``credential`` on :meth:`aclose` (``False`` to keep a shared one).
        trust_env: Honour proxy environment variables and ``.netrc`` (costs ~1 ms CPU per
            request, so off by default).
        api_version: Key Vault API version, default: the SDK's.
        resolve_references: Resolve App Service Key Vault references
            (``@Microsoft.KeyVault(SecretUri=...)`` or ``@Microsoft.KeyVault(VaultName=...;
            SecretName=...)``) found in values from the other sources (init kwargs, environment,
            dotenv), concurrently with the load, with the same credential. ``False`` leaves
            such values as they are.

    ``aclose()`` (or leaving ``async with``) closes the client, the session and the credential;
    it is idempotent. Any use afterwards raises :class:`~kvconfig.ClosedError`.
    """

    def __init__(
        self,
        vault_url: str,
        credential: AsyncTokenCredential | TokenCredential,
        *,
        ca_file: str | PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        vaults: Mapping[str, str] | None = None,
        fallback_vaults: Sequence[str] | None = None,
        prefix: str | Sequence[str] = "",
        max_concurrency: int = 32,
        ttl: float | timedelta = 300.0,
        startup_timeout: float | timedelta = 30.0,
        request_timeout: float | timedelta = 10.0,
        retry_backoff: float | timedelta = 0.25,
        retry_backoff_max: float | timedelta = 8.0,
        close_credential: bool = True,
        trust_env: bool = False,
        api_version: str | None = None,
        resolve_references: bool = True,
    ) -> None:
        vault_url = vault_url.rstrip("/")
        vault_host(vault_url)  # validates the URL
        self._vaultset = VaultSet.build(vault_url, vaults, fallback_vaults)
        prefixes = normalize_prefix(prefix)
        for one in prefixes:
            if not isinstance(one, str) or (one and not is_valid_secret_name(one)):
                raise ConfigurationError(
                    f"prefix {one!r} cannot start a Key Vault secret name (letters, digits, '-')"
                )
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if ca_file is not None and ssl_context is not None:
            raise ConfigurationError("pass ca_file or ssl_context, not both")
        self._vault_url = vault_url
        # A sync credential is wrapped (its get_token runs in a thread); validated here.
        self._credential, self._close_credential = as_async(
            credential, close_credential=close_credential
        )
        self._prefix: str | tuple[str, ...] = prefix if isinstance(prefix, str) else prefixes
        self._prefixes = prefixes
        self._plans: weakref.WeakKeyDictionary[type[BaseSettings], SettingsPlan] = (
            weakref.WeakKeyDictionary()
        )
        self._resolve_references = resolve_references
        self._max_concurrency = max_concurrency
        self._ttl = _seconds(ttl, "ttl")
        self._startup_timeout = _seconds(startup_timeout, "startup_timeout")
        self._request_timeout = _seconds(request_timeout, "request_timeout")
        self._retry_backoff = _seconds(retry_backoff, "retry_backoff")
        self._retry_backoff_max = _seconds(retry_backoff_max, "retry_backoff_max")
        self._trust_env = trust_env
        self._api_version = api_version
        # Built now (file I/O, CA errors surface early); the session is built in the loop.
        self._ssl_context = ssl_context if ssl_context is not None else build_ssl_context(ca_file)
        self._pool: VaultPool | None = None
        self._session: aiohttp.ClientSession | None = None
        self._client: SecretClient | None = None
        self._fetcher: SecretFetcher | None = None
        self._cache = SecretCache(self._ttl)  # survives a change of event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client, the session and (unless ``close_credential=False``) the credential.

        Safe to call more than once.
        """
        if self._closed:
            return
        self._closed = True
        try:
            keeper = self._keeper
            if keeper is not None and not keeper.done():
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
            await self._release()
        finally:
            if self._close_credential:
                await self._credential.close()

    async def _release(self) -> None:
        """Close what is bound to the current event loop: every vault's fetcher, client and
        session. Idempotent."""
        pool = self._pool
        self._pool = None
        self._fetcher = self._client = self._session = None
        if pool is not None:
            await pool.aclose()

    async def _keep(self) -> None:
        """Lives as long as this loop's resources; cancelled by ``aclose()`` or by the loop's
        shutdown (``asyncio.run`` cancels every task before closing its loop), it then closes
        them, so a ``KeyVault`` used by one ``asyncio.run`` after another leaks nothing."""
        try:
            await asyncio.Event().wait()
        finally:
            await self._release()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

    @property
    def vault_url(self) -> str:
        """The vault's URL (no trailing slash)."""
        return self._vault_url

    @property
    def retry_policy(self) -> RetryPolicy:
        """The backoff policy of every retry against this vault (GETs, list pages, refresh)."""
        return RetryPolicy(self._retry_backoff, self._retry_backoff_max)

    @property
    def prefix(self) -> str | tuple[str, ...]:
        """The prefix of field-derived secret names (a tuple for a chain)."""
        return self._prefix

    @property
    def vaults(self) -> Mapping[str, str]:
        """The aliases usable in ``Secret(vault=...)``: lower-cased alias -> vault URL."""
        return dict(self._vaultset.aliases)

    @property
    def fallback_vaults(self) -> tuple[str, ...]:
        """The vault URLs tried, in order, for an unpinned secret the primary vault lacks."""
        return self._vaultset.fallbacks

    def __repr__(self) -> str:
        return f"KeyVault({self._vault_url!r})"

    def _open(self) -> SecretFetcher:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop and self._fetcher is not None:
            # The other loop is still alive (another thread, or not shut down by asyncio.run):
            # its session can be neither used nor closed from here.
            raise ConfigurationError(
                f"{self!r} is in use by another event loop; use one KeyVault per event loop "
                "(or close it with aclose() in the loop that used it)"
            )
        if self._fetcher is None:
            self._loop = loop
            # One client, session and fetcher per vault, opened on first use; one credential,
            # SSL context, cache and concurrency limit for all of them.
            self._pool = VaultPool(
                self._credential,
                self._ssl_context,
                cache=self._cache,
                max_concurrency=self._max_concurrency,
                startup_timeout=self._startup_timeout,
                request_timeout=self._request_timeout,
                retry=self.retry_policy,
                trust_env=self._trust_env,
                api_version=self._api_version,
            )
            primary = self._vaultset.primary
            self._session = self._pool.session(primary)
            self._client = self._pool.client(primary)
            self._fetcher = self._pool.fetcher(primary)
            self._keeper = loop.create_task(self._keep(), name=f"kvconfig-{self!r}")
        return self._fetcher

    def _opened_pool(self) -> VaultPool:
        self._open()
        assert self._pool is not None
        return self._pool

    # -- loading ----------------------------------------------------------------------------

    def plan(self, settings_cls: type[BaseSettings]) -> SettingsPlan:
        """Which secrets :meth:`load` would request for ``settings_cls``, and where (no I/O).

        Each :class:`~kvconfig.PlannedSecret` lists the names tried in order (``names``) and
        the vaults tried in order (``vaults``).
        """
        plan = self._plans.get(settings_cls)
        if plan is None:
            plan = self._vaultset.route(plan_settings(settings_cls, self._prefixes))
            self._plans[settings_cls] = plan
        return plan

    async def load(self, settings_cls: type[SettingsT], /, **init_kwargs: Any) -> SettingsT:
        """Fetch the secrets ``settings_cls`` needs and return a validated instance.

        Init kwargs, environment variables and ``.env`` take precedence over vault values, which
        take precedence over file secrets and defaults. pydantic-settings' underscore options
        (``_env_file=``, ``_secrets_dir=``, ...) work as in ``Settings(...)``.

        Raises:
            ConfigurationError: The class cannot be mapped to secret names (before any request).
            MissingSettingError: A required field has no value from any source.
            SettingsValidationError: Values do not validate (fields named, values never shown).
            VaultAuthenticationError, VaultPermissionError: Refused; not retried.
            VaultUnavailableError: Transient failures outlasted ``startup_timeout``.
            ClosedError: The vault was closed.
        """
        loaded = await self._load(settings_cls, self.plan(settings_cls), init_kwargs)
        return loaded.settings

    def watch(
        self,
        settings_cls: type[SettingsT],
        /,
        *,
        interval: float | timedelta = 60.0,
        max_staleness: float | timedelta | None = None,
        on_missing: OnMissing = "keep",
        not_yet_valid: NotYetValid = "ignore",
        on_change: ChangeCallback | None = None,
        clock_skew: float | timedelta = 1.0,
        on_change_timeout: float | timedelta = 30.0,
        on_refresh_error: ErrorCallback | None = None,
        notify_max_delay: float | timedelta = 30.0,
        shared_dir: str | os.PathLike[str] | None = None,
        **init_kwargs: Any,
    ) -> LiveSettings[SettingsT]:
        """Keep a ``settings_cls`` instance fresh: an async context manager.

        ::

            async with vault.watch(Settings, interval=60) as live:
                live.current                       # latest validated Settings; no I/O
                change = await live.refresh()      # refresh now: ChangeEvent or None
                async for change in live.changes():
                    ...

        Entering loads like :meth:`load` (same errors) and starts one background task that
        refreshes at most every ``interval`` (up to 10 % sooner, jittered) at the lowest request
        cost, validates the complete new Settings before publishing it, and keeps the
        last-known-good on any failure.

        Args:
            settings_cls: The Settings class.
            interval: Seconds (or ``timedelta``) between refreshes.
            max_staleness: Seconds without a successful refresh after which ``live.health``
                is no longer ``fresh`` (it stays ``serving``); default ``3 * interval``.
            on_missing: A secret deleted or disabled in the vault: ``"keep"`` its last-known-good
                value (with a warning) or fall back to other sources and the field's
                ``"default"``.
            not_yet_valid: A new version whose ``not_before`` is in the future: ``"ignore"`` it
                until then, or ``"accept"`` it at once.
            on_change: Called (and awaited, if async) with each :class:`~kvconfig.ChangeEvent`,
                in generation order, by a dispatcher task *after* the refresh published it
                (``refresh()`` does not wait for it); its failures are logged. It may await
                ``live.refresh()``.
            on_change_timeout: Seconds an ``on_change`` or ``on_refresh_error`` call may run; a
                longer one is cancelled and logged, and the next one is delivered.
            on_refresh_error: Called (and awaited, if async) with each failed refresh's error
                and each rejected new value (a :class:`~kvconfig.SettingsValidationError`, also
                when other changes were published), by the same dispatcher as ``on_change``,
                never inside a refresh. Always a :class:`~kvconfig.KvConfigError` without its
                chain: kvconfig's message (fields, secrets, the vault; never a value), or for
                an unexpected exception only its type. Its failures are logged.
            clock_skew: Seconds this host's clock may differ from the vault's (see
                :mod:`kvconfig._refresh._detect` on one-second ``updated`` times).
            notify_max_delay: Push refresh: ``live.notify(events)`` re-reads a rotated secret
                after a random delay in ``[0, notify_max_delay]`` seconds (default 30), so a
                fleet receiving the same event does not hit the vault at once. With push,
                ``interval`` is a safety poll (e.g. an hour).
            shared_dir: A private directory shared by the worker processes of one host: they
                elect one refresher (OS file lock) that polls the vault and writes change
                notices (names and versions, never a value); the others GET only what changed.
                If the refresher dies, another takes over within one interval. ``None`` (the
                default): every process polls on its own.
            **init_kwargs: As for :meth:`load`.
        """
        from kvconfig._refresh._watch import LiveSettings

        return LiveSettings(
            VaultLink(self),
            settings_cls,
            interval=interval,
            max_staleness=max_staleness,
            on_missing=on_missing,
            not_yet_valid=not_yet_valid,
            on_change=on_change,
            clock_skew=clock_skew,
            init_kwargs=init_kwargs,
            on_change_timeout=on_change_timeout,
            on_refresh_error=on_refresh_error,
            notify_max_delay=notify_max_delay,
            shared_dir=shared_dir,
        )

    def _build(
        self,
        settings_cls: type[SettingsT],
        plan: SettingsPlan,
        secrets: Mapping[tuple[str, str | None], FetchedSecret],
        init_kwargs: dict[str, Any],
        *,
        references: Mapping[str, str] | None = None,
    ) -> SettingsT:
        """Validate ``settings_cls`` from its usual sources plus the fetched secrets (keyed by
        ``PlannedSecret.slot``) and resolved Key Vault references. No I/O."""
        built: SettingsT = build_settings(
            settings_cls,
            plan,
            secrets,
            init_kwargs,
            vault_url=self._vault_url,
            references=references,
        )
        return built

    async def _load(
        self,
        settings_cls: type[SettingsT],
        plan: SettingsPlan,
        init_kwargs: dict[str, Any],
        *,
        not_yet_valid: str = "ignore",
    ) -> Loaded[SettingsT]:
        """The one load path (``load()`` and entering ``watch()``): drop what a higher-priority
        source supplies, find Key Vault references, read every planned secret along its chain
        of vaults and names and every reference's secret in the same rounds, apply the
        ``not_yet_valid`` policy, log, build."""
        started = time.perf_counter()
        plan = needed_plan(settings_cls, plan, init_kwargs)
        names = [ref.name for ref in plan.refs]  # telemetry hook (span kvconfig.load)
        with telemetry.load(settings_cls.__name__, self.vault_url, names) as span:
            references = self._find_references(settings_cls, init_kwargs)
            result = await self._read(plan, references)
            if not_yet_valid == "ignore":
                result = await self._valid_now(result)
            span.requests = result.requests  # telemetry hook
            log_load(settings_cls, plan, result, started, vault_url=self._vault_url)
            try:
                values = _reference_values(plan, references, result)
                settings = self._build(
                    settings_cls, plan, _slots(plan, result), init_kwargs, references=values
                )
            except SettingsValidationError:
                # Never serve this failure back: a secret created to fix it must be read next.
                self._forget_absent(result)
                raise
            return Loaded(settings, plan, result, references, values)

    def _forget_absent(self, result: ReadResult) -> None:
        pool = self._pool
        if pool is None:
            return
        by_vault: dict[str, list[SecretRef]] = {}
        for candidate in result.observed:
            by_vault.setdefault(candidate.vault_url, []).append(candidate.ref)
        for url, refs in by_vault.items():
            pool.fetcher(url).forget_absent(refs)

    def _find_references(
        self, settings_cls: type[BaseSettings], init_kwargs: Mapping[str, Any]
    ) -> tuple[tuple[FoundReference, Candidate], ...]:
        """The Key Vault references in the other sources' values, and where each points.

        Raises :class:`~kvconfig.KeyVaultReferenceError` for a malformed one (before any
        request). Empty when ``resolve_references=False``.
        """
        if not self._resolve_references:
            return ()
        try:
            sources, _ = source_list(settings_cls, dict(init_kwargs))
        except Exception:
            return ()
        return tuple(
            (found, self._vaultset.for_reference(found.parse()))
            for found in find_references(sources)
        )

    async def _read(
        self,
        plan: SettingsPlan,
        references: Sequence[tuple[FoundReference, Candidate]] = (),
        *,
        max_age: float | None = None,
    ) -> ReadResult:
        """Read every planned secret along its chain of vaults and names, and every reference's
        secret, all in the same rounds (see _routing). Resolutions: the plan's, then the
        references'."""
        pool = self._opened_pool()
        chains = [chain(s) for s in plan.secrets]
        chains.extend((candidate,) for _, candidate in references)
        try:
            return await read_chains(pool, chains, max_age=max_age)
        except VaultError as exc:
            # The error names the vault and the secret; say which field(s) wanted it too.
            name = (exc.secret_name or "").lower()
            fields = [
                planned.field
                for planned, candidates in zip(plan.secrets, chains, strict=False)
                if any(
                    c.vault_url == exc.vault_url and c.ref.name.lower() == name for c in candidates
                )
            ]
            fields += [found.field for found, c in references if c.ref.name.lower() == name]
            if fields:
                exc.add_note(f"needed by field(s): {', '.join(dict.fromkeys(fields))}")
            raise

    async def _valid_now(self, result: ReadResult) -> ReadResult:
        """Replace a latest version that is not valid yet (``not_before`` in the future; Key
        Vault serves it anyway) by the newest enabled version valid now, so a replica starting
        during a staged rotation agrees with the running watchers (``not_yet_valid="ignore"``).

        Costs a list of that secret's versions plus a GET of the chosen one, only in this case
        (in the secret's own vault). No valid older version: the latest is kept (``log_load``
        warns about it).
        """
        now = datetime.now(UTC)
        pending = list(
            dict.fromkeys(
                r.candidate
                for r in result.resolutions
                if r.candidate.ref.version is None
                and r.secret.found
                and r.secret.is_not_yet_valid(now)
            )
        )
        if not pending:
            return result
        pool = self._opened_pool()
        observed = dict(result.observed)
        requests = result.requests
        for candidate in pending:
            url, ref = candidate
            latest = observed[candidate]
            chosen: tuple[datetime, str] | None = None
            requests += 1  # one page (25 versions); more versions cost more pages
            try:
                async for props in pool.client(url).list_properties_of_secret_versions(ref.name):
                    if not props.enabled or props.version is None:
                        continue
                    if props.not_before is not None and props.not_before > now:
                        continue
                    if props.expires_on is not None and props.expires_on <= now:
                        continue
                    stamp = props.created_on or props.updated_on or now
                    if chosen is None or stamp > chosen[0]:
                        chosen = (stamp, props.version)
            except Exception as exc:
                logger.warning(
                    "could not list the versions of secret %s in %s (%s); using its latest "
                    "version although it is not valid before %s",
                    ref.name,
                    url,
                    type(exc).__name__,
                    latest.not_before,
                )
                continue
            if chosen is None or chosen[1] == latest.version:
                continue
            older = await pool.fetcher(url).fetch([SecretRef(ref.name, chosen[1])])
            requests += older.requests
            found = older.secrets[(ref.name.lower(), chosen[1])]
            if found.found:
                logger.warning(
                    "secret %s in %s: the latest version %s is not valid before %s; using "
                    "version %s, the newest valid now (not_yet_valid='ignore')",
                    ref.name,
                    url,
                    latest.version,
                    latest.not_before,
                    found.version,
                )
                observed[candidate] = found
        resolutions = tuple(
            replace(r, secret=observed[r.candidate]) if r.candidate in pending else r
            for r in result.resolutions
        )
        return replace(result, resolutions=resolutions, observed=observed, requests=requests)

    # -- contract for kvconfig._dropin (pydantic-settings' name rules) -------------------------
    # The drop-in source decides its secret names itself; these two calls are all it uses.

    async def _read_names(
        self, names: Iterable[str]
    ) -> dict[str, FetchedSecret]:  # contract: kvconfig._dropin
        """GET these secrets (latest) as :meth:`load` does: lower-cased name -> result.

        A name the primary vault does not have (404) is looked up in the fallback vaults.
        """
        refs = tuple(dict.fromkeys(SecretRef(name) for name in names))
        if not refs:
            return {}
        pool = self._opened_pool()
        urls = (self._vaultset.primary, *self._vaultset.fallbacks)
        chains = [tuple(Candidate(url, ref) for url in urls) for ref in refs]
        result = await read_chains(pool, chains)
        return {
            ref.name.lower(): resolution.secret
            for ref, resolution in zip(refs, result.resolutions, strict=True)
        }

    async def _list_names(self) -> list[str]:  # contract: kvconfig._dropin
        """The names of the enabled secrets of the primary vault and every fallback vault (the
        vaults :meth:`_read_names` reads), spelled as the first vault that has each spells it:
        one list pass per vault, concurrently, the same one a refresh makes (plain-JSON pages,
        the retry policy, ``startup_timeout``)."""
        pool = self._opened_pool()
        deadline = time.monotonic() + self._startup_timeout
        urls = (self._vaultset.primary, *self._vaultset.fallbacks)
        listed = await all_or_none({url: self._list_vault(pool, url, deadline) for url in urls})
        names: dict[str, str] = {}
        for url in urls:
            for name in listed[url]:
                names.setdefault(name.lower(), name)
        return list(names.values())

    async def _list_vault(self, pool: VaultPool, url: str, deadline: float) -> list[str]:
        fetcher = pool.fetcher(url)
        try:
            listing, _ = await list_secrets(
                pool.client(url),
                vault_url=url,
                retry=self.retry_policy,
                request_timeout=self._request_timeout,
                deadline=deadline,
                closed=lambda: fetcher.closed,
            )
        except ListForbidden as forbidden:
            raise VaultPermissionError(
                f"listing the secrets of vault {url} was refused "
                f"({forbidden.reason}); grant the secrets/list permission",
                vault_url=url,
                status=403,
            ) from None
        return [item.name for item in listing.values() if item.enabled]


@dataclass(frozen=True, slots=True)
class Loaded(Generic[SettingsT]):
    """What the one load path produced (for ``load()`` and for entering ``watch()``).

    Attributes:
        settings: The validated instance.
        plan: The routed plan fetched (without what a higher-priority source supplies).
        result: Every answer read and how each chain resolved (the plan's, then the
            references').
        references: The Key Vault references found and where each points.
        reference_values: Reference text -> the value it resolved to.
    """

    settings: SettingsT
    plan: SettingsPlan
    result: ReadResult
    references: tuple[tuple[FoundReference, Candidate], ...]
    reference_values: Mapping[str, str]


def _slots(plan: SettingsPlan, result: ReadResult) -> dict[tuple[str, str | None], FetchedSecret]:
    """The secret each planned field resolved to, keyed by ``PlannedSecret.slot``."""
    return {
        planned.slot: resolution.secret
        for planned, resolution in zip(plan.secrets, result.resolutions, strict=False)
    }


def _reference_values(
    plan: SettingsPlan,
    references: Sequence[tuple[FoundReference, Candidate]],
    result: ReadResult,
) -> dict[str, str]:
    """Reference text -> value; :class:`KeyVaultReferenceError` for one that did not resolve."""
    values: dict[str, str] = {}
    resolutions: Sequence[Resolution] = result.resolutions[len(plan.secrets) :]
    for (found, candidate), resolution in zip(references, resolutions, strict=True):
        secret = resolution.secret
        if not secret.found or secret.value is None:
            state = "is disabled" if secret.status is SecretStatus.DISABLED else "does not exist"
            version = f" version {candidate.ref.version}" if candidate.ref.version else ""
            raise KeyVaultReferenceError(
                f'field "{found.field}" ({found.source}): Key Vault reference '
                f"{shown(found.text)!r} cannot be resolved: secret {candidate.ref.name!r}"
                f"{version} in {candidate.vault_url} {state}",
                field=found.field,
                reference=shown(found.text),
            )
        values[found.text] = secret.value
    return values


class VaultLink:
    """The narrow contract :class:`~kvconfig.LiveSettings` (and any other refresher) drives a
    :class:`KeyVault` through: fetch, build, the one load path, and whether it is closed. It
    never needs a ``KeyVault`` private member."""

    __slots__ = ("_vault",)

    def __init__(self, vault: KeyVault) -> None:
        self._vault = vault

    @property
    def vault_url(self) -> str:
        return self._vault.vault_url

    @property
    def closed(self) -> bool:
        return self._vault.closed

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._vault.retry_policy

    @property
    def request_timeout(self) -> float:
        return self._vault._request_timeout

    def plan(self, settings_cls: type[BaseSettings]) -> SettingsPlan:
        """As :meth:`KeyVault.plan`."""
        return self._vault.plan(settings_cls)

    def fetcher(self) -> SecretFetcher:
        """The vault's fetcher (opening the vault in this loop on first use)."""
        return self._vault._open()

    def client(self) -> SecretClient:
        """The SDK client the fetcher uses (for list pages, sent through the same pipeline)."""
        self._vault._open()
        client = self._vault._client
        assert client is not None
        return client

    def pool(self) -> VaultPool:
        """Every vault's fetcher and client (opening the vault in this loop on first use)."""
        return self._vault._opened_pool()

    async def load(
        self,
        settings_cls: type[SettingsT],
        plan: SettingsPlan,
        init_kwargs: dict[str, Any],
        *,
        not_yet_valid: str = "ignore",
    ) -> Loaded[SettingsT]:
        """Exactly what :meth:`KeyVault.load` does (with the watcher's ``not_yet_valid``
        policy), plus what it read, the plan fetched (without the secrets a higher-priority
        source supplies) and the Key Vault references it resolved."""
        return await self._vault._load(settings_cls, plan, init_kwargs, not_yet_valid=not_yet_valid)

    def build(
        self,
        settings_cls: type[SettingsT],
        plan: SettingsPlan,
        secrets: Mapping[tuple[str, str | None], FetchedSecret],
        init_kwargs: dict[str, Any],
        *,
        references: Mapping[str, str] | None = None,
    ) -> SettingsT:
        """Validate a complete new instance from ``secrets`` (keyed by ``PlannedSecret.slot``)
        and the resolved Key Vault references (no I/O)."""
        return self._vault._build(settings_cls, plan, secrets, init_kwargs, references=references)

    def __repr__(self) -> str:
        return repr(self._vault)
