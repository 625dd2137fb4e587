"""Validation errors without the input: pydantic's messages re-rendered from their templates.

``ValidationError.errors(include_input=False)`` drops ``input``, but each error's ``msg`` is
already rendered and some messages quote the input: ``uuid_parsing`` names the offending
character, ``json_invalid`` and ``value_error`` carry a free-form ``{error}`` (a custom
validator's message may contain the value), a discriminator ``{tag}`` comes from the data. Here
every message is rebuilt from pydantic-core's template, keeping only context that comes from the
schema (limits, patterns, expected types) and eliding the rest.

Locations are masked too: pydantic puts the keys of a ``dict[str, int]``, ``dict[str, Model]`` or
``Json[...]`` value in ``loc`` (``quotas.sk_live_51H…``), and those keys are part of the value.
A location keeps the field names the schema declares (down through nested models); everything
below that was read from the value becomes :data:`MASK`.

Messages are rendered by pydantic-core's public ``ValidationError.from_exception_data``.
"""

from __future__ import annotations

import types
import typing
from typing import Any, TypedDict

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails

__all__ = ["MASK", "SafeError", "mask_loc", "safe_errors"]

MASK = "…"  # stands for the part of a location that was read from the value

# Context keys whose values come from the schema, never from the validated input.
_SCHEMA_KEYS = frozenset(
    {
        "class",
        "class_name",
        "decimal_places",
        "discriminator",
        "expected",
        "expected_schemes",
        "expected_tags",
        "expected_version",
        "field_type",
        "ge",
        "gt",
        "le",
        "lt",
        "max_digits",
        "max_length",
        "method_name",
        "min_length",
        "multiple_of",
        "pattern",
        "tz_expected",
        "whole_digits",
    }
)


class SafeError(TypedDict):
    """One validation error: where, which kind, and a message that quotes no input."""

    type: str
    loc: tuple[int | str, ...]
    msg: str


def _render(error_type: str, ctx: dict[str, Any] | None) -> str:
    """pydantic's own message for ``error_type``, rendered by pydantic-core (public
    ``ValidationError.from_exception_data``) from the schema's context only: every other context
    value is replaced by ``…`` and the input is never passed."""
    safe_ctx = {k: (v if k in _SCHEMA_KEYS else "…") for k, v in (ctx or {}).items()}
    details: dict[str, Any] = {"type": error_type, "loc": (), "input": None}
    if safe_ctx:
        details["ctx"] = safe_ctx
    try:
        rendered = ValidationError.from_exception_data(
            "kvconfig", [typing.cast(InitErrorDetails, details)]
        ).errors(include_url=False)
    except (KeyError, TypeError, ValueError):  # a custom error type: its message is the user's
        return f"invalid value ({error_type})"
    return str(rendered[0]["msg"])


def safe_errors(exc: ValidationError, model: type[BaseModel] | None = None) -> list[SafeError]:
    """``exc``'s errors with messages and locations that cannot contain the input.

    ``model`` is the class that was validated: its declared field names (and nested models')
    stay in ``loc``; without it only the top-level field name does.
    """
    return [
        SafeError(
            type=error["type"],
            loc=mask_loc(tuple(error["loc"]), model),
            msg=_render(error["type"], error.get("ctx")),
        )
        for error in exc.errors(include_url=False)
    ]


def mask_loc(loc: tuple[int | str, ...], model: type[BaseModel] | None) -> tuple[int | str, ...]:
    """``loc`` up to the last name ``model``'s schema declares, then :data:`MASK` for the rest."""
    kept: list[int | str] = []
    current = model
    for index, part in enumerate(loc):
        if index == 0 and model is None and isinstance(part, str):
            kept.append(part)
            continue
        child = _declared(current, part)
        if child is False:
            return (*kept, MASK)
        kept.append(part)
        current = child if isinstance(child, type) else None
    return tuple(kept)


def _declared(model: type[BaseModel] | None, part: int | str) -> type[BaseModel] | bool | None:
    """``False`` if ``part`` is not a field of ``model``; else the field's nested model, if any."""
    if model is None or not isinstance(part, str):
        return False
    for name, info in model.model_fields.items():
        labels = {name, info.alias}
        if isinstance(info.validation_alias, str):
            labels.add(info.validation_alias)
        if part in labels:
            return _model_of(info.annotation)
    return False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        models = [a for a in typing.get_args(annotation) if _is_model(a)]
        return models[0] if len(models) == 1 else None
    return annotation if _is_model(annotation) else None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
