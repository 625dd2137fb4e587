"""Validation messages are rebuilt from pydantic's templates and never quote the input."""

from __future__ import annotations

from uuid import UUID

import pytest
from pydantic import BaseModel, Field, ValidationError, field_validator

from kvconfig._redact import safe_errors

SECRET = "CANARY-7f3a"


class Model(BaseModel):
    uuid: UUID
    small: int = Field(le=5)
    short: str = Field(max_length=3)
    one: str = Field(max_length=1)
    custom: str

    @field_validator("custom")
    @classmethod
    def reject(cls, value: str) -> str:
        raise ValueError(f"bad value {value}")  # a careless validator quoting its input


def errors() -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        Model(uuid=SECRET, small=9, short=SECRET, one=SECRET, custom=SECRET)
    assert "C" in str(info.value)  # pydantic's own text does quote the input
    return {str(e["loc"][0]): e["msg"] for e in safe_errors(info.value)}


def test_messages_keep_schema_context_and_drop_the_input() -> None:
    msgs = errors()
    assert msgs == {
        "uuid": "Input should be a valid UUID, …",
        "small": "Input should be less than or equal to 5",
        "short": "String should have at most 3 characters",
        "one": "String should have at most 1 character",
        "custom": "Value error, …",
    }
    assert not any("C" in m or "7f3a" in m for m in msgs.values())
