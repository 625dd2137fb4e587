"""``KeyVaultSettingsSource``: hands already-fetched secrets to pydantic-settings. No I/O."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping, Sequence, Set
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from kvconfig._errors import SettingsValidationError
from kvconfig._model import FetchedSecret
from kvconfig._names import PlannedSecret, SettingsPlan

__all__ = ["KeyVaultSettingsSource"]


class KeyVaultSettingsSource(PydanticBaseSettingsSource):
    """A pydantic-settings source serving secrets that :meth:`kvconfig.KeyVault.load` fetched.

    :meth:`~kvconfig.KeyVault.load` inserts one automatically, after init kwargs, the environment
    and dotenv, before file secrets and defaults. To choose the position yourself, return one
    from ``settings_customise_sources``; ``load()`` then fills that instance instead::

        @classmethod
        def settings_customise_sources(
            cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        ):
            return (init_settings, KeyVaultSettingsSource(settings_cls), env_settings)

    The source never does I/O: constructed outside ``load()`` it provides nothing. Complex
    values (models, dicts, lists, ...) are decoded from JSON exactly as pydantic-settings does
    for environment variables; leaf secrets of a nested model override the keys of the model's
    own JSON secret.
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._plan: SettingsPlan | None = None
        self._secrets: Mapping[tuple[str, str | None], FetchedSecret] = {}
        self._data: dict[str, Any] | None = None

    def _bind(
        self, plan: SettingsPlan, secrets: Mapping[tuple[str, str | None], FetchedSecret]
    ) -> None:
        """Give the source the secrets it will serve, keyed by ``PlannedSecret.slot`` (the
        ``SecretRef.key`` of a field read from the default vault)."""
        self._plan = plan
        self._secrets = secrets
        self._data = None

    @property
    def bound(self) -> bool:
        """Whether ``load()`` has handed this source its values."""
        return self._plan is not None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """The value for a top-level field (``None`` when the vault has none)."""
        data = self()
        return data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self._build()
        # deep_update in pydantic-settings copies; hand out a fresh top level anyway.
        return dict(self._data)

    def _build(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self._plan is None:
            return data
        for planned in self._plan.secrets:  # parents come before their fields
            secret = self._secrets.get(planned.slot)
            if secret is None or not secret.found or secret.value is None:
                continue
            _assign(data, planned.key_path, self._decode(planned, secret.value))
        return data

    def _decode(self, planned: PlannedSecret, value: str) -> Any:
        info = planned.field_info
        strict = planned.nested or self.field_is_complex(info)
        if not strict and not _union_is_complex(info.annotation):
            return value
        try:
            return self.decode_complex_value(planned.field_path[-1], info, value)
        except (ValueError, RecursionError) as exc:
            # RecursionError: JSON nested deeper than the interpreter's recursion limit.
            if not strict:
                return value  # like pydantic-settings: a union may also take the raw string
            if isinstance(exc, json.JSONDecodeError):
                detail = f" ({exc.msg} at line {exc.lineno} column {exc.colno})"
            elif isinstance(exc, RecursionError):
                detail = " (nested too deeply)"
            else:
                detail = ""
        # Raised outside the except block, so the error keeps no __context__: a JSONDecodeError
        # holds the whole input (the secret value) in `.doc`.
        raise SettingsValidationError(
            f'secret {planned.name!r} for field "{planned.field}" is not valid JSON{detail}',
            errors=[
                {
                    "type": "json_invalid",
                    "loc": planned.key_path,
                    "msg": "secret is not valid JSON",
                }
            ],
        ) from None


def _assign(data: dict[str, Any], key_path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in key_path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            # The parent's JSON secret was absent or not an object: leaf secrets still apply.
            child = {}
            node[key] = child
        node = child
    node[key_path[-1]] = value


def _union_is_complex(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is not typing.Union and origin is not types.UnionType:
        return False
    return any(_is_complex_type(arg) for arg in typing.get_args(annotation))


def _is_complex_type(annotation: Any) -> bool:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    target = typing.get_origin(annotation) or annotation
    if not isinstance(target, type) or issubclass(target, str | bytes):
        return False
    return issubclass(target, BaseModel | Mapping | Sequence | Set | tuple)
