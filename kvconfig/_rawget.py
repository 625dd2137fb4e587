"""Read one secret as plain JSON: ``SecretClient.send_request`` + ``json.loads``, no SDK models.

``get_secret`` runs the SDK's tracing decorator, its generated operation and its model
deserialisation for every secret; kvconfig needs eight fields of one small JSON object. This
module sends the same GET through the same pipeline (same authentication, challenge cache,
timeouts) and parses the body itself, as kvconfig already does for list pages.

Errors are raised exactly as ``get_secret`` raises them, so ``_translate.classify`` needs no
change: azure-core's public ``map_error`` with the SDK's own status map (401, 404, 409, 304),
then ``HttpResponseError`` (which parses the service's ``{"error": {...}}`` body into ``.error``)
for any other status >= 400. A body that is not the expected JSON raises ``DecodeError``
without the response attached, so nothing of a value can reach a message.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    map_error,
)
from azure.core.rest import HttpRequest
from azure.keyvault.secrets.aio import SecretClient

__all__ = ["RawSecret", "get_secret_raw"]

# The status map of the SDK's generated ``get_secret`` (azure-keyvault-secrets 4.x).
_ERROR_MAP: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
    304: ResourceNotModifiedError,
}


@dataclass(frozen=True, slots=True)
class RawSecret:
    """The fields of a secret bundle kvconfig uses; names match ``FetchedSecret``'s."""

    version: str | None
    value: str
    enabled: bool | None
    content_type: str | None
    created: dt.datetime | None
    updated: dt.datetime | None
    expires_on: dt.datetime | None
    not_before: dt.datetime | None


async def get_secret_raw(
    client: SecretClient, name: str, version: str | None = None, **kwargs: Any
) -> RawSecret:
    """``await client.get_secret(name, version, **kwargs)``, without the SDK's models.

    ``kwargs`` go to the pipeline as for ``get_secret`` (``connection_timeout``,
    ``read_timeout``, ...). Raises what ``get_secret`` raises for the same response.
    """
    path = f"/secrets/{quote(name, safe='')}/{quote(version or '', safe='')}"
    request = HttpRequest("GET", f"{path}?api-version={client.api_version}")
    response = await client.send_request(request, **kwargs)
    status = response.status_code
    if status != 200:
        map_error(status_code=status, response=response, error_map=_ERROR_MAP)
        raise HttpResponseError(response=response)
    try:
        return _parse(json.loads(response.content))
    except (ValueError, TypeError, AttributeError, KeyError):
        # No response attached and no chaining: the body may hold the value.
        raise DecodeError(
            f"the vault's answer for secret {name!r} is not a secret bundle"
        ) from None


def _parse(bundle: dict[str, Any]) -> RawSecret:
    attributes = bundle.get("attributes") or {}
    secret_id = bundle.get("id")
    version = secret_id.rstrip("/").rsplit("/", 1)[1] if isinstance(secret_id, str) else None
    value = bundle.get("value")
    if value is not None and not isinstance(value, str):
        raise TypeError("value is not a string")
    return RawSecret(
        version=version,
        value=value if value is not None else "",
        enabled=attributes.get("enabled"),
        content_type=bundle.get("contentType"),
        created=_time(attributes.get("created")),
        updated=_time(attributes.get("updated")),
        expires_on=_time(attributes.get("exp")),
        not_before=_time(attributes.get("nbf")),
    )


def _time(unix: int | float | None) -> dt.datetime | None:
    return None if unix is None else dt.datetime.fromtimestamp(unix, dt.UTC)
