"""``AzureKeyVaultSettingsSource``: pydantic-settings' Key Vault source, one import away, fast.

The same constructor as ``pydantic_settings.AzureKeyVaultSettingsSource`` (2.16), plus
:class:`~kvconfig.KeyVault`'s options as keywords. It subclasses pydantic-settings' source, so
every name rule (``env_prefix``, aliases, ``AliasChoices``, ``validate_by_name``,
``case_sensitive``, ``dash_to_underscore``, ``snake_case_conversion``, ``env_parse_none_str``,
nested ``--`` keys, JSON decoding) is pydantic-settings' own code. Only the data it looks names
up in differs: instead of listing the vault and GETting one secret at a time on a client it never
closes, it GETs exactly the names the class can read (:mod:`kvconfig._names_compat`),
concurrently, with the aio SDK on a private loop thread, then closes the client, session and
(async) credential.

The read happens when pydantic-settings calls the source (``BaseSettings`` sets
``current_state``, what the higher-priority sources gave, right before), not at construction,
and leaves out every name that cannot change the result because that state already supplies
its field. A source constructed but never called makes no request.

pydantic-settings hooks used (private, pinned by ``tests/dropin``): ``EnvSettingsSource.
_load_env_vars`` and ``env_vars`` (where the names are looked up) and
``sources.utils._parse_env_none_str``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pydantic.alias_generators import to_snake
from pydantic_settings import AzureKeyVaultSettingsSource as _PydanticAzureSource
from pydantic_settings.sources.utils import _parse_env_none_str

from kvconfig._credentials import is_async_credential
from kvconfig._errors import ConfigurationError
from kvconfig._names_compat import CompatPlan, compat_plan
from kvconfig._sync import run_sync
from kvconfig._vault import KeyVault

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings
    from pydantic_settings.sources.utils import InitState

__all__ = ["AzureKeyVaultSettingsSource"]

logger = logging.getLogger("kvconfig")

_VAULT_OPTIONS = frozenset(
    name
    for name, p in inspect.signature(KeyVault.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
)


class AzureKeyVaultSettingsSource(_PydanticAzureSource):
    """pydantic-settings' ``AzureKeyVaultSettingsSource``, reading only what the class needs.

    ::

        from kvconfig import AzureKeyVaultSettingsSource  # was: from pydantic_settings import ...

        class Settings(BaseSettings):
            api_key: str

            @classmethod
            def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                           dotenv_settings, file_secret_settings):
                vault = AzureKeyVaultSettingsSource(
                    settings_cls, os.environ["VAULT_URL"], DefaultAzureCredential()
                )
                return (init_settings, env_settings, dotenv_settings, vault)

        settings = Settings()  # plain, sync: works with or without a running event loop

    Args are pydantic-settings': ``settings_cls``, ``url``, ``credential`` (sync
    ``azure.identity`` or async ``azure.identity.aio``), ``dash_to_underscore``,
    ``case_sensitive``, ``snake_case_conversion``, ``env_prefix``, ``env_parse_none_str``,
    ``env_parse_enums``; then any :class:`~kvconfig.KeyVault` option as a keyword (``ca_file``,
    ``max_concurrency``, ``startup_timeout``, ...). The secrets are read when the source is
    called (pydantic-settings' source reads at construction), with kvconfig's errors, and only
    those whose field no higher-priority source (init kwargs, environment, ``.env``, whatever
    ``settings_customise_sources`` puts first) already supplies. An async credential is closed
    after the read (``close_credential=False`` keeps it open); a sync one is left open.

    The vault is listed (once, for this class) only where pydantic-settings' result needs
    names no class can predict: dicts read entry by entry, ``snake_case_conversion``,
    ``case_sensitive=True``, nested models with ``extra`` other than ``"ignore"``.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        url: str,
        credential: Any,
        dash_to_underscore: bool = False,
        case_sensitive: bool | None = None,
        snake_case_conversion: bool = False,
        env_prefix: str | None = None,
        env_parse_none_str: str | None = None,
        env_parse_enums: bool | None = None,
        _init_state: InitState | None = None,
        **vault_options: Any,
    ) -> None:
        unknown = sorted(set(vault_options) - _VAULT_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"AzureKeyVaultSettingsSource got unknown option(s) {', '.join(unknown)}; "
                f"KeyVault options are {', '.join(sorted(_VAULT_OPTIONS))}"
            )
        if "prefix" in vault_options:
            raise ConfigurationError(
                "AzureKeyVaultSettingsSource follows pydantic-settings' rules: pass env_prefix "
                "(or set it in model_config), not prefix"
            )
        self._vault_options = dict(vault_options)
        # What this source has read so far: a second call (or a direct lookup) reads only
        # names not asked yet.
        self._values: dict[str, str] = {}
        self._asked: set[str] = set()
        self._listed: list[str] | None = None
        # pydantic-settings' __init__ validates nothing about these, then calls _load_env_vars().
        super().__init__(
            settings_cls,
            url,
            credential,
            dash_to_underscore=dash_to_underscore,
            case_sensitive=case_sensitive,
            snake_case_conversion=snake_case_conversion,
            env_prefix=env_prefix,
            env_parse_none_str=env_parse_none_str,
            env_parse_enums=env_parse_enums,
            _init_state=_init_state,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Called by EnvSettingsSource.__init__: no I/O here. A lookup before any call (someone
        # using the source by hand) reads everything the class can use, once.
        return _Deferred(lambda: self._read({}))

    def __call__(self) -> dict[str, Any]:
        """Read what the current state leaves open, then pydantic-settings' own ``__call__``.

        Afterwards ``env_vars`` holds what was read (fields the state supplied are absent).
        """
        self.env_vars = self._read(self.current_state)
        return super().__call__()

    def _read(self, state: Mapping[str, Any]) -> _PrefetchedMapping:
        plan = compat_plan(
            self,
            dash_to_underscore=self._dash_to_underscore,
            snake_case_conversion=self._snake_case_conversion,
            state=state,
        )
        if (plan.needs_listing and self._listed is None) or self._names(plan):
            started = time.perf_counter()
            before = len(self._values)
            run_sync(lambda: self._fetch(plan))
            logger.info(
                "loaded %s from %s (pydantic-settings rules%s): %d secrets found, "
                "%d fields left to earlier sources, %.1f ms",
                self.settings_cls.__name__,
                self._url,
                f", listed: {plan.reason}" if plan.needs_listing else "",
                len(self._values) - before,
                len(plan.supplied),
                (time.perf_counter() - started) * 1000,
            )
        else:
            logger.debug(
                "%s: nothing to read from %s (%d fields left to earlier sources)",
                self.settings_cls.__name__,
                self._url,
                len(plan.supplied),
            )
        return _PrefetchedMapping(
            self._values,
            case_sensitive=bool(self.case_sensitive),
            snake_case_conversion=self._snake_case_conversion,
            env_prefix=self.env_prefix,
            env_parse_none_str=self.env_parse_none_str,
        )

    def _names(self, plan: CompatPlan) -> list[str]:
        """The names to GET for ``plan`` that this source has not asked for yet."""
        if plan.needs_listing:
            assert self._listed is not None
            names = [name for name in self._listed if self._wanted(name, plan)]
        else:
            names = list(plan.names)
        return [name for name in names if name.lower() not in self._asked]

    async def _fetch(self, plan: CompatPlan) -> None:
        options = dict(self._vault_options)
        # pydantic-settings never closes a credential: a sync one (the usual
        # DefaultAzureCredential()) serves every later Settings() too. An aio one is bound to
        # this call's private loop, so it is closed with it.
        options.setdefault("close_credential", is_async_credential(self._credential))
        async with KeyVault(self._url, self._credential, **options) as vault:
            if plan.needs_listing and self._listed is None:
                self._listed = await vault._list_names()
            names = self._names(plan)
            fetched = await vault._read_names(names)
        self._asked.update(name.lower() for name in names)
        spelled = {name.lower(): name for name in self._listed or ()}
        for key, secret in fetched.items():
            if secret.found and secret.value is not None:
                self._values[spelled.get(key, secret.name)] = secret.value

    def _wanted(self, name: str, plan: CompatPlan) -> bool:
        """Whether pydantic-settings could read the listed secret ``name`` for this class.

        It looks top-level names up through the mapping's normalisation, and takes every
        (normalised) name starting with a complex field's ``<name><delimiter>``.
        """
        options = {
            "case_sensitive": bool(self.case_sensitive),
            "snake_case_conversion": self._snake_case_conversion,
            "env_prefix": self.env_prefix,
        }
        key = _normalise(name, **options)
        lookups = {_normalise(lookup, **options) for lookup in plan.lookups}
        return key in lookups or key.startswith(plan.prefixes)


def _normalise(name: str, **options: Any) -> str:
    """The key pydantic-settings' ``AzureKeyVaultMapping`` files a vault name under."""
    env_prefix: str = options["env_prefix"]
    if options["snake_case_conversion"]:
        if name.startswith(env_prefix):
            return f"{env_prefix}{to_snake(name[len(env_prefix) :])}"
        return to_snake(name)
    return name if options["case_sensitive"] else name.lower()


class _Deferred(Mapping[str, str | None]):
    """``env_vars`` before the first call: reads (everything) on first use, never on repr."""

    def __init__(self, read: Callable[[], Mapping[str, str | None]]) -> None:
        self._read = read
        self._mapping: Mapping[str, str | None] | None = None

    def _loaded(self) -> Mapping[str, str | None]:
        if self._mapping is None:
            self._mapping = self._read()
        return self._mapping

    def __getitem__(self, key: str) -> str | None:
        return self._loaded()[key]

    def __len__(self) -> int:
        return len(self._loaded())

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __repr__(self) -> str:
        return "<secrets not read yet>" if self._mapping is None else repr(self._mapping)


class _PrefetchedMapping(Mapping[str, str | None]):
    """``AzureKeyVaultMapping``'s lookups over secrets already read (no I/O)."""

    def __init__(
        self,
        values: Mapping[str, str],
        *,
        case_sensitive: bool,
        snake_case_conversion: bool,
        env_prefix: str,
        env_parse_none_str: str | None,
    ) -> None:
        self._options = {
            "case_sensitive": case_sensitive,
            "snake_case_conversion": snake_case_conversion,
            "env_prefix": env_prefix,
        }
        self._none_str = env_parse_none_str
        self._values = {_normalise(name, **self._options): v for name, v in values.items()}

    def __getitem__(self, key: str) -> str | None:
        value = self._values[_normalise(key, **self._options)]
        return _parse_env_none_str(value, self._none_str)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __repr__(self) -> str:
        return f"<{len(self._values)} secrets>"
