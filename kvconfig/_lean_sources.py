"""Leave out settings sources that cannot contribute a value, before building a Settings class.

pydantic-settings' ``EnvSettingsSource.__call__`` walks every field of the class (field info,
aliases, nested-delimiter handling), whatever it holds: ~5.6 ms for a class of 1000 fields,
and ``DotEnvSettingsSource`` pays the same walk again even when no ``.env`` file is configured
or none exists. A source whose mapping (its public ``env_vars``, read once at construction) is
empty cannot produce a value, so dropping it changes no outcome and no precedence: the other
sources keep their order.

Only the exact pydantic-settings classes are dropped; a subclass may add values of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic_settings import DotEnvSettingsSource, EnvSettingsSource, PydanticBaseSettingsSource

__all__ = ["drop_idle_sources"]

_ENV_SOURCES = (EnvSettingsSource, DotEnvSettingsSource)


def drop_idle_sources(
    sources: Sequence[PydanticBaseSettingsSource],
) -> tuple[PydanticBaseSettingsSource, ...]:
    """``sources`` without the environment and dotenv sources that hold no variable at all."""
    return tuple(s for s in sources if not _idle(s))


def _idle(source: PydanticBaseSettingsSource) -> bool:
    if type(source) not in _ENV_SOURCES:
        return False
    assert isinstance(source, EnvSettingsSource)
    return not source.env_vars
