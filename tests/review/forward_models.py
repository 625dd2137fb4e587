"""Settings classes with forward references, as users write them (issue 9 item 6)."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_settings import BaseSettings


class Service(BaseSettings):
    database: Database  # defined below


class Database(BaseModel):
    host: str
    port: int


class Broken(BaseSettings):
    cache: Cache  # type: ignore[name-defined]  # noqa: F821  never defined
