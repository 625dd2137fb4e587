"""Validation errors without the input: pydantic's messages re-rendered from their templates.

``ValidationError.errors(include_input=False)`` drops ``input``, but each error's ``msg`` is
already rendered and some messages quote the input: ``uuid_parsing`` names the offending
character, ``json_invalid`` and ``value_error`` carry a free-form ``{error}`` (a custom
validator's message may contain the value), a discriminator ``{tag}`` comes from the data. Here
every message is rebuilt from pydantic-core's template, keeping only context that comes from the
schema (limits, patterns, expected types) and eliding the rest.
"""

from __future__ import annotations

import functools
import re
from typing import Any, TypedDict

from pydantic import ValidationError
from pydantic_core._pydantic_core import list_all_errors

__all__ = ["SafeError", "safe_errors"]

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
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class SafeError(TypedDict):
    """One validation error: where, which kind, and a message that quotes no input."""

    type: str
    loc: tuple[int | str, ...]
    msg: str


@functools.cache
def _templates() -> dict[str, str]:
    return {e["type"]: e["message_template_python"] for e in list_all_errors()}


def _render(error_type: str, ctx: dict[str, Any] | None) -> str:
    template = _templates().get(error_type)
    if template is None:  # a custom error type: its message is the user's own text
        return f"invalid value ({error_type})"
    ctx = ctx or {}

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "expected_plural":  # pydantic derives it from the limit
            limit = ctx.get("max_length", ctx.get("min_length"))
            return "" if limit == 1 else "s"
        return str(ctx[key]) if key in _SCHEMA_KEYS and key in ctx else "…"

    return _PLACEHOLDER.sub(fill, template)


def safe_errors(exc: ValidationError) -> list[SafeError]:
    """``exc``'s errors with messages that cannot contain the input."""
    return [
        SafeError(
            type=error["type"],
            loc=tuple(error["loc"]),
            msg=_render(error["type"], error.get("ctx")),
        )
        for error in exc.errors(include_url=False)
    ]
