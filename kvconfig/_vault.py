"""``KeyVault``: loads Settings classes from a vault (and its aliased and fallback vaults).

Internals (for code building on this module, e.g. refresh):

- ``KeyVault._fetcher`` (:class:`kvconfig._fetch.SecretFetcher`) owns the client calls, the retry
  policy, priming, single-flight and the :class:`~kvconfig._fetch.SecretCache`
  (``KeyVault._fetcher.cache``). ``await fetcher.fetch(refs, max_age=0)`` re-reads bypassing the
  cache; results are :class:`~kvconfig._fetch.FetchedSecret` keyed by ``SecretRef.key``.
- :func:`kvconfig._names.plan_settings` maps a Settings class to its
  :class:`~kvconfig._names.SettingsPlan` (cached); ``plan.refs`` is what to fetch.
- :meth:`KeyVault._build` turns a plan plus fetched secrets into a validated Settings instance
  (pydantic-settings precedence, kvconfig errors); it does no I/O.
- Several vaults (:mod:`kvconfig._routing`): ``KeyVault._pool`` holds one client, session and
  fetcher per vault; ``KeyVault._fetcher``/``_client`` are the primary vault's. ``plan()``
  returns the *routed* plan (each planned secret's ``vaults`` filled in).
- Everything is created lazily on first use inside the running loop (``_open()``), so a
  ``KeyVault`` can be constructed anywhere.
"""

from __future__ import annotations

import inspect
import logging
import ssl
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError
from azure.keyvault.secrets.aio import SecretClient
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SecretsSettingsSource
from pydantic_settings.exceptions import SettingsError
from pydantic_settings.sources import DefaultSettingsSource

from kvconfig._client import build_ssl_context, vault_host
from kvconfig._errors import (
    ClosedError,
    ConfigurationError,
    KeyVaultReferenceError,
    MissingSettingError,
    SettingsValidationError,
    VaultError,
    VaultUnavailableError,
)
from kvconfig._fetch import FetchedSecret, SecretFetcher, SecretStatus
from kvconfig._names import (
    PlannedSecret,
    SecretRef,
    SettingsPlan,
    is_valid_secret_name,
    normalize_prefix,
    plan_settings,
)
from kvconfig._redact import safe_errors
from kvconfig._references import (
    FoundReference,
    find_references,
    shown,
    substitute_in_sources,
)
from kvconfig._routing import Candidate, ReadResult, VaultPool, VaultSet, chain, read_chains
from kvconfig._source import KeyVaultSettingsSource
from kvconfig._translate import classify

if TYPE_CHECKING:
    from kvconfig._changes import NotYetValid, OnMissing
    from kvconfig._watch import ChangeCallback, LiveSettings

__all__ = ["KeyVault"]

logger = logging.getLogger("kvconfig")

SettingsT = TypeVar("SettingsT", bound=BaseSettings)

# The underscore options of BaseSettings.__init__ that configure the built-in sources.
_SOURCE_OPTIONS = frozenset(
    name
    for name in inspect.signature(BaseSettings._settings_init_sources).parameters
    if name.startswith("_") and name != "_init_kwargs"
)


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
            ``retry_backoff_max``); a ``Retry-After`` from the vault takes precedence.
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
        credential: AsyncTokenCredential,
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
        self._credential = credential
        self._prefix: str | tuple[str, ...] = prefix if isinstance(prefix, str) else prefixes
        self._prefixes = prefixes
        self._plans: weakref.WeakKeyDictionary[type[BaseSettings], SettingsPlan] = (
            weakref.WeakKeyDictionary()
        )
        self._max_concurrency = max_concurrency
        self._ttl = _seconds(ttl, "ttl")
        self._startup_timeout = _seconds(startup_timeout, "startup_timeout")
        self._request_timeout = _seconds(request_timeout, "request_timeout")
        self._retry_backoff = _seconds(retry_backoff, "retry_backoff")
        self._retry_backoff_max = _seconds(retry_backoff_max, "retry_backoff_max")
        self._close_credential = close_credential
        self._trust_env = trust_env
        self._api_version = api_version
        self._resolve_references = resolve_references
        # Built now (file I/O, CA errors surface early); the session is built in the loop.
        self._ssl_context = ssl_context if ssl_context is not None else build_ssl_context(ca_file)
        self._pool: VaultPool | None = None
        self._session: aiohttp.ClientSession | None = None
        self._client: SecretClient | None = None
        self._fetcher: SecretFetcher | None = None
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
            if self._pool is not None:
                await self._pool.aclose()
        finally:
            if self._close_credential:
                await self._credential.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

    @property
    def vault_url(self) -> str:
        """The vault's URL (no trailing slash)."""
        return self._vault_url

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
        if self._fetcher is None:
            self._pool = VaultPool(
                self._credential,
                self._ssl_context,
                ttl=self._ttl,
                max_concurrency=self._max_concurrency,
                startup_timeout=self._startup_timeout,
                request_timeout=self._request_timeout,
                retry_backoff=self._retry_backoff,
                retry_backoff_max=self._retry_backoff_max,
                trust_env=self._trust_env,
                api_version=self._api_version,
            )
            primary = self._vaultset.primary
            self._session = self._pool.session(primary)
            self._client = self._pool.client(primary)
            self._fetcher = self._pool.fetcher(primary)
        return self._fetcher

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
        started = time.perf_counter()
        plan = self.plan(settings_cls)
        found = self._find_references(settings_cls, init_kwargs)
        result = await self._read(plan, found)
        self._log_load(settings_cls, plan, result, started)
        return self._build(
            settings_cls,
            plan,
            _slots(plan, result),
            init_kwargs,
            references=_reference_values(plan, found, result),
        )

    def _find_references(
        self, settings_cls: type[BaseSettings], init_kwargs: Mapping[str, Any]
    ) -> tuple[tuple[FoundReference, Candidate], ...]:
        """The Key Vault references in the other sources' values, and where each points.

        Raises :class:`~kvconfig.KeyVaultReferenceError` for a malformed one (before any
        request). Empty when ``resolve_references=False``.
        """
        if not self._resolve_references:
            return ()
        values = dict(init_kwargs)
        options = {k: values.pop(k) for k in list(values) if k in _SOURCE_OPTIONS}
        try:
            sources, _ = settings_cls._settings_init_sources(_init_kwargs=values, **options)
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
        self._open()
        assert self._pool is not None
        chains = [chain(s) for s in plan.secrets]
        chains.extend((candidate,) for _, candidate in references)
        try:
            return await read_chains(self._pool, chains, max_age=max_age)
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
                reports unhealthy; default ``3 * interval``.
            on_missing: A secret deleted or disabled in the vault: ``"keep"`` its last-known-good
                value (with a warning) or fall back to other sources and the field's
                ``"default"``.
            not_yet_valid: A new version whose ``not_before`` is in the future: ``"ignore"`` it
                until then, or ``"accept"`` it at once.
            on_change: Called (and awaited, if async) with each :class:`~kvconfig.ChangeEvent`,
                in order; its failures are logged. It must not await ``live.refresh()``.
            clock_skew: Seconds this host's clock may differ from the vault's (see
                :mod:`kvconfig._changes` on one-second ``updated`` times).
            **init_kwargs: As for :meth:`load`.
        """
        from kvconfig._watch import LiveSettings

        return LiveSettings(
            self,
            settings_cls,
            interval=interval,
            max_staleness=max_staleness,
            on_missing=on_missing,
            not_yet_valid=not_yet_valid,
            on_change=on_change,
            clock_skew=clock_skew,
            init_kwargs=init_kwargs,
        )

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
        self._open()
        assert self._pool is not None
        urls = (self._vaultset.primary, *self._vaultset.fallbacks)
        chains = [tuple(Candidate(url, ref) for url in urls) for ref in refs]
        result = await read_chains(self._pool, chains)
        return {
            ref.name.lower(): resolution.secret
            for ref, resolution in zip(refs, result.resolutions, strict=True)
        }

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
        *,
        references: Mapping[str, str] | None = None,
    ) -> SettingsT:
        """Validate ``settings_cls`` from its usual sources plus the fetched secrets. No I/O.

        ``references``: resolved Key Vault references (reference text -> secret value) to
        substitute in the other sources' values.
        """
        values = dict(init_kwargs)
        # `_env_file=`, `_secrets_dir=`, ... configure the sources, as in `Settings(...)`.
        options = {k: values.pop(k) for k in list(values) if k in _SOURCE_OPTIONS}
        error: SettingsValidationError
        try:
            sources, kwargs = settings_cls._settings_init_sources(_init_kwargs=values, **options)
            if references:
                substitute_in_sources(sources, references)
            ours = [s for s in sources if isinstance(s, KeyVaultSettingsSource)]
            if ours:
                for source in ours:
                    source._bind(plan, secrets)
            else:
                source = KeyVaultSettingsSource(settings_cls)
                source._bind(plan, secrets)
                sources = _insert_source(sources, source)
            return settings_cls(_build_sources=(sources, kwargs))
        except ValidationError as exc:
            error = self._validation_error(settings_cls, plan, exc)
        except SettingsError as exc:
            # pydantic-settings' own parse errors name the field and source, never the value.
            error = SettingsValidationError(str(exc))
        # Raised outside the except blocks: `from None` only hides the original from tracebacks,
        # and as __context__ it would still hold pydantic's error, which quotes the input.
        raise error from None

    def _validation_error(
        self, settings_cls: type[BaseSettings], plan: SettingsPlan, exc: ValidationError
    ) -> SettingsValidationError:
        errors = safe_errors(exc)
        lines: list[str] = []
        missing_only = True
        for error in errors:
            loc = tuple(error["loc"])
            where = ".".join(str(part) for part in loc) or settings_cls.__name__
            if error["type"] == "missing":
                lines.append(
                    f"{where}: required, but no init argument, environment variable or dotenv "
                    f"entry set it, and {_tried(plan.secrets_for_location(loc))}"
                )
            else:
                missing_only = False
                lines.append(f"{where}: {error['msg']}")
        cls = MissingSettingError if missing_only else SettingsValidationError
        count = len(errors)
        message = (
            f"{count} error{'s' if count != 1 else ''} loading {settings_cls.__name__} from "
            f"{self._vault_url}:\n  " + "\n  ".join(lines)
        )
        return cls(message, errors=[dict(e) for e in errors])

    def _log_load(
        self,
        settings_cls: type[BaseSettings],
        plan: SettingsPlan,
        result: ReadResult,
        started: float,
    ) -> None:
        counts = dict.fromkeys(SecretStatus, 0)
        fields_by_key: dict[tuple[str, str, str | None], list[str]] = {}
        for planned, resolution in zip(plan.secrets, result.resolutions, strict=False):
            fields_by_key.setdefault(resolution.candidate.key, []).append(planned.field)
        for candidate, secret in result.observed.items():
            counts[secret.status] += 1
            url = candidate.vault_url
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "secret %s in %s version %s: %s",
                    secret.name,
                    url,
                    secret.version,
                    secret.status.value,
                )
            fields = ", ".join(fields_by_key.get(candidate.key, ()))
            if not fields:
                continue  # a 404 that a later candidate made up for, or a reference
            if secret.status is SecretStatus.DISABLED:
                logger.warning(
                    "secret %s in %s is disabled; treated as missing (field %s)",
                    secret.name,
                    url,
                    fields,
                )
            elif secret.found and secret.is_expired():
                logger.warning(
                    "secret %s in %s expired on %s; Key Vault still serves it (field %s)",
                    secret.name,
                    url,
                    secret.expires_on,
                    fields,
                )
            elif secret.found and secret.is_not_yet_valid():
                logger.warning(
                    "secret %s in %s is not valid before %s; Key Vault serves it anyway (field %s)",
                    secret.name,
                    url,
                    secret.not_before,
                    fields,
                )
        vaults = dict.fromkeys(c.vault_url for c in result.observed) or {self._vault_url: None}
        logger.info(
            "loaded %s from %s: %d secrets requested, %d found, %d missing, %d disabled, "
            "%d requests, %.1f ms",
            settings_cls.__name__,
            ", ".join(vaults),
            len(result.observed),
            counts[SecretStatus.FOUND],
            counts[SecretStatus.MISSING],
            counts[SecretStatus.DISABLED],
            result.requests,
            (time.perf_counter() - started) * 1000,
        )


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
    for (found, candidate), resolution in zip(
        references, result.resolutions[len(plan.secrets) :], strict=True
    ):
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


def _tried(planned: Sequence[PlannedSecret]) -> str:
    """``"no vault had secret 'a' (tried in https://x, https://y) ..."`` for an error message."""
    if not planned:
        return "no secret is mapped to it"
    parts = []
    for secret in planned:
        names = ", ".join(repr(n) for n in secret.names)
        vaults = ", ".join(secret.vaults) or "the vault"
        parts.append(f"{names} in {vaults}")
    return "no vault had any of the secrets tried: " + "; ".join(parts)


def _insert_source(sources: tuple[Any, ...], source: KeyVaultSettingsSource) -> tuple[Any, ...]:
    """Put the vault source right before file secrets, else right before the defaults."""
    for index, existing in enumerate(sources):
        if isinstance(existing, SecretsSettingsSource):
            return (*sources[:index], source, *sources[index:])
    for index, existing in enumerate(sources):
        if isinstance(existing, DefaultSettingsSource):
            return (*sources[:index], source, *sources[index:])
    return (*sources, source)
