"""Key Vault's wire format: the routed call, JSON shapes of secrets and deleted secrets
(reference section 4), request bodies (with Content-Encoding) and paging (section 5)."""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from kvconfig.emulator._errors import ServiceError
from kvconfig.emulator._store import (
    RECOVERABLE_DAYS,
    RECOVERY_LEVEL,
    Secret,
    SecretVersion,
    b64url_decode,
    b64url_encode,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PAGE_SIZE",
    "Call",
    "Reset",
    "attrs_of",
    "deleted_doc",
    "item_doc",
    "json_body",
    "json_response",
    "opt_str",
    "paginate",
    "tags_of",
]

MAX_PAGE_SIZE = 25
MAX_BODY_BYTES = 1024 * 1024
# api-versions before `recoverableDays` existed on SecretAttributes.
_NO_RECOVERABLE_DAYS = frozenset({"7.0", "2016-10-01"})
T = TypeVar("T")


class Reset(Exception):
    """Abort the connection instead of answering."""


@dataclass(slots=True)
class Call:
    """A routed request: the vault, path parameters and query."""

    request: web.Request
    vault: str
    base: str
    api_version: str
    name: str = ""
    version: str = ""


# -- JSON shapes (reference section 4) ----------------------------------------------------------


def attributes_doc(v: SecretVersion, api_version: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {"enabled": v.enabled}
    if v.not_before is not None:
        attrs["nbf"] = v.not_before
    if v.expires is not None:
        attrs["exp"] = v.expires
    attrs["created"] = v.created
    attrs["updated"] = v.updated
    if api_version not in _NO_RECOVERABLE_DAYS:
        attrs["recoverableDays"] = RECOVERABLE_DAYS
    attrs["recoveryLevel"] = RECOVERY_LEVEL
    return attrs


def item_doc(
    call: Call, secret: Secret, v: SecretVersion, *, versioned: bool, value: bool = False
) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if value:
        doc["value"] = v.value
    suffix = f"/{v.version}" if versioned else ""
    doc["id"] = f"{call.base}/secrets/{secret.name}{suffix}"
    if v.content_type is not None:
        doc["contentType"] = v.content_type
    doc["attributes"] = attributes_doc(v, call.api_version)
    if v.tags is not None:
        doc["tags"] = dict(v.tags)
    return doc


def deleted_doc(call: Call, secret: Secret, *, versioned: bool) -> dict[str, Any]:
    doc = {
        "recoveryId": f"{call.base}/deletedsecrets/{secret.name}",
        "deletedDate": secret.deleted_date,
        "scheduledPurgeDate": secret.scheduled_purge,
    }
    doc.update(item_doc(call, secret, secret.latest, versioned=versioned))
    return doc


# -- request parsing ----------------------------------------------------------------------------


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ServiceError(
            415,
            "UnsupportedMediaType",
            "The request content type must be application/json.",
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ServiceError(
            413,
            "RequestEntityTooLarge",
            f"The request body exceeds the maximum allowed size of {MAX_BODY_BYTES} bytes.",
        ) from None
    except web.RequestPayloadError:  # bad Content-Encoding or chunk framing
        raise ServiceError.bad_parameter(
            "The request body could not be read: it does not match its framing or Content-Encoding."
        ) from None
    except ConnectionError:  # the client hung up mid-body: nobody to answer, nothing to log
        raise Reset from None
    encodings = request.headers.get("Content-Encoding", "")
    for encoding in reversed([e.strip().lower() for e in encodings.split(",") if e.strip()]):
        raw = decode_body(raw, encoding)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        raise ServiceError.bad_parameter("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ServiceError.bad_parameter("The request body must be a JSON object.")
    return body


def decode_body(raw: bytes, encoding: str) -> bytes:
    """Undo one Content-Encoding, bounded by the body limit (aiohttp's own decompression is off
    so that a bad encoding gets an answer in Azure's shape, not aiohttp's)."""
    if encoding == "identity":
        return raw
    if encoding in ("gzip", "x-gzip"):
        decoders = [zlib.decompressobj(16 + zlib.MAX_WBITS)]
    elif encoding == "deflate":  # zlib-wrapped, or raw deflate as some clients send it
        decoders = [zlib.decompressobj(), zlib.decompressobj(-zlib.MAX_WBITS)]
    else:
        raise ServiceError(
            415, "UnsupportedMediaType", f"The Content-Encoding '{encoding}' is not supported."
        )
    for decoder in decoders:
        try:
            out = decoder.decompress(raw, MAX_BODY_BYTES + 1)
        except zlib.error:
            continue
        if len(out) > MAX_BODY_BYTES:
            raise ServiceError(
                413,
                "RequestEntityTooLarge",
                f"The request body exceeds the maximum allowed size of {MAX_BODY_BYTES} bytes.",
            )
        if decoder.eof:
            return out
    raise ServiceError.bad_parameter(
        f"The request body could not be read: it is not valid {encoding} data."
    )


def opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ServiceError.bad_parameter(f"Property '{key}' must be a string.")
    return value


def tags_of(body: dict[str, Any]) -> dict[str, str] | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise ServiceError.bad_parameter("Property 'tags' must map strings to strings.")
    return tags


def attrs_of(body: dict[str, Any]) -> dict[str, Any]:
    attrs = body.get("attributes")
    if attrs is None:
        return {}
    if not isinstance(attrs, dict):
        raise ServiceError.bad_parameter("Property 'attributes' must be an object.")
    out: dict[str, Any] = {}
    if "enabled" in attrs and attrs["enabled"] is not None:
        if not isinstance(attrs["enabled"], bool):
            raise ServiceError.bad_parameter("Attribute 'enabled' must be a boolean.")
        out["enabled"] = attrs["enabled"]
    for key, arg in (("nbf", "not_before"), ("exp", "expires")):
        if key in attrs:
            value = attrs[key]
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (isinstance(value, float) and not math.isfinite(value))  # JSON Infinity/NaN
            ):
                raise ServiceError.bad_parameter(f"Attribute '{key}' must be Unix seconds.")
            out[arg] = None if value is None else int(value)
    return out


def page_size(call: Call) -> int:
    raw = call.request.query.get("maxresults")
    if raw is None:
        return MAX_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        # The spec bounds maxresults to 1..25; refusing (not clamping) keeps code that passes here
        # from relying on bigger pages a real vault may not give.
        raise ServiceError.bad_parameter(
            f"Invalid maxresults value '{raw}': it must be an integer from 1 to {MAX_PAGE_SIZE}."
        )
    return size


def paginate(call: Call, items: list[tuple[str, T]]) -> tuple[list[T], str | None]:
    """Slice ``(sort key, item)`` pairs after the ``$skiptoken`` marker; return the page and the
    absolute nextLink (or None)."""
    size = page_size(call)
    token = call.request.query.get("$skiptoken")
    start = 0
    if token:
        try:
            marker = json.loads(b64url_decode(token))["NextMarker"]
            if not isinstance(marker, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise ServiceError.bad_parameter("The $skiptoken is invalid.") from None
        while start < len(items) and items[start][0] <= marker:
            start += 1
    page = items[start : start + size]
    if start + size >= len(items):
        return [item for _, item in page], None
    next_token = b64url_encode(json.dumps({"NextMarker": page[-1][0]}).encode())
    next_link = (
        f"{call.base}{call.request.path}?api-version={call.api_version}"
        f"&$skiptoken={next_token}&maxresults={size}"
    )
    return [item for _, item in page], next_link


def json_response(doc: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(doc, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )
