"""``KeyVault``: one vault, one client, one session; loads Settings classes from it.

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
- Everything is created lazily on first use inside the running loop (``_open()``), so a
  ``KeyVault`` can be constructed anywhere; when that loop shuts down, its session is closed and
  the next loop gets new ones (the cache is kept).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError
from azure.keyvault.secrets.aio import SecretClient
from pydantic_settings import BaseSettings

from kvconfig._build import build_settings, log_load, needed_plan
from kvconfig._cache import SecretCache
from kvconfig._client import (
    VaultClients,
    build_clients,
    build_session,
    build_ssl_context,
    signalling,
    vault_host,
)
from kvconfig._errors import (
    ClosedError,
    ConfigurationError,
    SettingsValidationError,
    VaultError,
    VaultUnavailableError,
)
from kvconfig._fetch import SecretFetcher
from kvconfig._model import FetchedSecret, FetchResult
from kvconfig._names import (
    SecretRef,
    SettingsPlan,
    is_valid_secret_name,
    plan_settings,
)
from kvconfig._retry import RetryPolicy
from kvconfig._telemetry import telemetry
from kvconfig._translate import classify

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
        credential: An async ``AsyncTokenCredential`` (``azure.identity.aio``).
        ca_file: PEM file of an extra CA to trust (the emulator, a TLS-inspecting proxy).
        ssl_context: A ready client SSL context instead of ``ca_file``.
        prefix: Prepended to every field-derived secret name (``"prod-"``); not to explicit
            ``Secret("name")`` names.
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

    ``aclose()`` (or leaving ``async with``) closes the client, the session and the credential;
    it is idempotent. Any use afterwards raises :class:`~kvconfig.ClosedError`.
    """

    def __init__(
        self,
        vault_url: str,
        credential: AsyncTokenCredential,
        *,
        ca_file: str | PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        prefix: str = "",
        max_concurrency: int = 32,
        ttl: float | timedelta = 300.0,
        startup_timeout: float | timedelta = 30.0,
        request_timeout: float | timedelta = 10.0,
        retry_backoff: float | timedelta = 0.25,
        retry_backoff_max: float | timedelta = 8.0,
        close_credential: bool = True,
        trust_env: bool = False,
        api_version: str | None = None,
    ) -> None:
        vault_url = vault_url.rstrip("/")
        vault_host(vault_url)  # validates the URL
        if prefix and not is_valid_secret_name(prefix):
            raise ConfigurationError(
                f"prefix {prefix!r} cannot start a Key Vault secret name (letters, digits, '-')"
            )
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if ca_file is not None and ssl_context is not None:
            raise ConfigurationError("pass ca_file or ssl_context, not both")
        self._vault_url = vault_url
        self._credential = credential
        self._prefix = prefix
        self._max_concurrency = max_concurrency
        self._ttl = _seconds(ttl, "ttl")
        self._startup_timeout = _seconds(startup_timeout, "startup_timeout")
        self._request_timeout = _seconds(request_timeout, "request_timeout")
        self._retry_backoff = _seconds(retry_backoff, "retry_backoff")
        self._retry_backoff_max = _seconds(retry_backoff_max, "retry_backoff_max")
        self._close_credential = close_credential
        self._trust_env = trust_env
        self._api_version = api_version
        # Built now (file I/O, CA errors surface early); the session is built in the loop.
        self._ssl_context = ssl_context if ssl_context is not None else build_ssl_context(ca_file)
        self._session: aiohttp.ClientSession | None = None
        self._client: SecretClient | None = None
        self._clients: VaultClients | None = None
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
        """Close what is bound to the current event loop: fetcher, client, session. Idempotent."""
        fetcher, clients, session = self._fetcher, self._clients, self._session
        self._fetcher = self._client = self._clients = self._session = None
        try:
            if fetcher is not None:
                await fetcher.aclose()
            if clients is not None:
                await clients.close()
        finally:
            if session is not None:
                await session.close()

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
    def prefix(self) -> str:
        """The prefix of field-derived secret names."""
        return self._prefix

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
            self._session = build_session(
                self._ssl_context, limit=self._max_concurrency, trust_env=self._trust_env
            )
            # The wrapper tells the fetcher when the token is in: priming can stop early.
            credential = signalling(self._credential)
            self._clients = clients = build_clients(
                self._vault_url,
                credential,
                self._session,
                trust_env=self._trust_env,
                api_version=self._api_version,
            )
            self._client = clients.secrets
            self._fetcher = SecretFetcher(
                clients.reader,
                vault_url=self._vault_url,
                cache=self._cache,
                max_concurrency=self._max_concurrency,
                startup_timeout=self._startup_timeout,
                request_timeout=self._request_timeout,
                retry=self.retry_policy,
                token_ready=credential.token_ready,
            )
            self._keeper = loop.create_task(self._keep(), name=f"kvconfig-{self!r}")
        return self._fetcher

    # -- loading ----------------------------------------------------------------------------

    def plan(self, settings_cls: type[BaseSettings]) -> SettingsPlan:
        """Which secrets :meth:`load` would request for ``settings_cls`` (no I/O)."""
        return plan_settings(settings_cls, self._prefix)

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
        settings, _, _ = await self._load(settings_cls, self.plan(settings_cls), init_kwargs)
        return settings

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
        )

    # -- contract for kvconfig._dropin (pydantic-settings' name rules) -------------------------
    # The drop-in source decides its secret names itself; these two calls are all it uses.

    async def _read_names(
        self, names: Iterable[str]
    ) -> dict[str, FetchedSecret]:  # contract: kvconfig._dropin
        """GET these secrets (latest) as :meth:`load` does: lower-cased name -> result."""
        refs = tuple(dict.fromkeys(SecretRef(name) for name in names))
        if not refs:
            return {}
        result = await self._open().fetch(refs)
        return {key[0]: secret for key, secret in result.secrets.items()}

    async def _list_names(self) -> list[str]:  # contract: kvconfig._dropin
        """The names (as the vault spells them) of the vault's enabled secrets: one list pass."""
        self._open()
        assert self._client is not None
        names: list[str] = []
        try:
            async for item in self._client.list_properties_of_secrets():
                if item.name and item.enabled:
                    names.append(item.name)
        except (AzureError, TimeoutError) as exc:
            verdict = classify(exc, vault_url=self._vault_url, secret_name="*")
            if verdict is None:
                raise
            error: VaultError = verdict.error or VaultUnavailableError(
                f"listing the secrets of vault {self._vault_url} failed ({verdict.reason})",
                vault_url=self._vault_url,
                status=getattr(exc, "status_code", None),
            )
        else:
            return names
        raise error from None

    def _build(
        self,
        settings_cls: type[SettingsT],
        plan: SettingsPlan,
        secrets: Mapping[tuple[str, str | None], FetchedSecret],
        init_kwargs: dict[str, Any],
    ) -> SettingsT:
        """Validate ``settings_cls`` from its usual sources plus the fetched secrets. No I/O."""
        built: SettingsT = build_settings(
            settings_cls, plan, secrets, init_kwargs, vault_url=self._vault_url
        )
        return built

    async def _load(
        self,
        settings_cls: type[SettingsT],
        plan: SettingsPlan,
        init_kwargs: dict[str, Any],
        *,
        not_yet_valid: str = "ignore",
    ) -> tuple[SettingsT, FetchResult, SettingsPlan]:
        """The one load path (``load()`` and entering ``watch()``): drop what a higher-priority
        source supplies, fetch, apply the ``not_yet_valid`` policy, log, build. Returns the
        plan actually fetched too."""
        started = time.perf_counter()
        plan = needed_plan(settings_cls, plan, init_kwargs)
        names = [ref.name for ref in plan.refs]  # telemetry hook (span kvconfig.load)
        with telemetry.load(settings_cls.__name__, self.vault_url, names) as span:
            fetcher = self._open()
            result = await fetcher.fetch(plan.refs)
            if not_yet_valid == "ignore":
                result = await self._valid_now(plan, result)
            span.requests = result.requests  # telemetry hook
            log_load(settings_cls, plan, result, started, vault_url=self._vault_url)
            try:
                return self._build(settings_cls, plan, result.secrets, init_kwargs), result, plan
            except SettingsValidationError:
                # Never serve this failure back: a secret created to fix it must be read next.
                fetcher.forget_absent(plan.refs)
                raise

    async def _valid_now(self, plan: SettingsPlan, result: FetchResult) -> FetchResult:
        """Replace a latest version that is not valid yet (``not_before`` in the future; Key
        Vault serves it anyway) by the newest enabled version valid now, so a replica starting
        during a staged rotation agrees with the running watchers (``not_yet_valid="ignore"``).

        Costs a list of that secret's versions plus a GET of the chosen one, only in this case.
        No valid older version: the latest is kept (``log_load`` warns about it).
        """
        now = datetime.now(UTC)
        pending = [
            ref
            for ref in dict.fromkeys(plan.refs)
            if ref.version is None
            and (secret := result.secrets.get(ref.key)) is not None
            and secret.found
            and secret.is_not_yet_valid(now)
        ]
        if not pending:
            return result
        fetcher = self._open()
        client = self._client
        assert client is not None
        secrets = dict(result.secrets)
        requests = result.requests
        for ref in pending:
            latest = secrets[ref.key]
            chosen: tuple[datetime, str] | None = None
            requests += 1  # one page (25 versions); more versions cost more pages
            try:
                async for props in client.list_properties_of_secret_versions(ref.name):
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
                    self._vault_url,
                    type(exc).__name__,
                    latest.not_before,
                )
                continue
            if chosen is None or chosen[1] == latest.version:
                continue
            older = await fetcher.fetch([SecretRef(ref.name, chosen[1])])
            requests += older.requests
            found = older.secrets[(ref.name.lower(), chosen[1])]
            if found.found:
                logger.warning(
                    "secret %s in %s: the latest version %s is not valid before %s; using "
                    "version %s, the newest valid now (not_yet_valid='ignore')",
                    ref.name,
                    self._vault_url,
                    latest.version,
                    latest.not_before,
                    found.version,
                )
                secrets[ref.key] = found
        return FetchResult(
            secrets=secrets,
            requests=requests,
            cache_hits=result.cache_hits,
            joined=result.joined,
        )


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

    async def load(
        self,
        settings_cls: type[SettingsT],
        plan: SettingsPlan,
        init_kwargs: dict[str, Any],
        *,
        not_yet_valid: str = "ignore",
    ) -> tuple[SettingsT, FetchResult, SettingsPlan]:
        """Exactly what :meth:`KeyVault.load` does (with the watcher's ``not_yet_valid``
        policy), plus the fetch result and the plan fetched (without the secrets a
        higher-priority source supplies)."""
        return await self._vault._load(settings_cls, plan, init_kwargs, not_yet_valid=not_yet_valid)

    def build(
        self,
        settings_cls: type[SettingsT],
        plan: SettingsPlan,
        secrets: Mapping[tuple[str, str | None], FetchedSecret],
        init_kwargs: dict[str, Any],
    ) -> SettingsT:
        """Validate a complete new instance from ``secrets`` (no I/O)."""
        return self._vault._build(settings_cls, plan, secrets, init_kwargs)

    def __repr__(self) -> str:
        return repr(self._vault)
