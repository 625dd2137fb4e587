"""What a published generation changed: :class:`ChangeEvent`, :class:`SecretChange`, field diffs.

Versions, times and field paths only: never a value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

__all__ = ["ChangeEvent", "SecretChange", "changed_fields"]


@dataclass(frozen=True, slots=True)
class SecretChange:
    """One secret whose version in use changed. Versions and times only, never a value.

    ``old_version``/``new_version`` is ``None`` when the secret was missing or disabled.
    ``vault_url`` is the vault it is in (``None`` only when built without one).
    """

    name: str
    old_version: str | None
    new_version: str | None
    old_updated: datetime | None
    new_updated: datetime | None
    vault_url: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """What one published generation of live settings changed. Never holds a value.

    Attributes:
        generation: The generation now in ``live.current`` (the initial load is 0).
        fields: Dotted paths of the fields whose value changed, e.g. ``"database.password"``.
        secrets: The secrets whose version in use changed.
        time: When it was published (UTC).
    """

    generation: int
    fields: tuple[str, ...]
    secrets: tuple[SecretChange, ...]
    time: datetime


def changed_fields(old: BaseModel, new: BaseModel) -> tuple[str, ...]:
    """Dotted paths of the fields whose values differ, descending into nested models."""
    return tuple(_diff(old, new, ()))


def _diff(old: BaseModel, new: BaseModel, prefix: tuple[str, ...]) -> Iterable[str]:
    for name in type(new).model_fields:
        a = getattr(old, name, None)
        b = getattr(new, name, None)
        path = (*prefix, name)
        if isinstance(a, BaseModel) and isinstance(b, BaseModel) and type(a) is type(b):
            yield from _diff(a, b, path)
        elif a != b:
            yield ".".join(path)
