"""Read one secret as plain JSON through kvconfig's pipeline, no SDK models.

``get_secret`` runs the SDK's tracing decorator, its generated operation and its model
deserialisation for every secret; kvconfig needs eight fields of one small JSON object.
:class:`RawSecretReader` sends the same GET through the same policies (the very same
instances as the ``SecretClient``: one challenge, one cached token) and transport, on azure-core's
public ``AsyncPipelineClient`` with an absolute URL, and parses the body itself, as kvconfig
already does for list pages. ``SecretClient.send_request`` would also work (and is the fallback
when the SDK's default pipeline is in use) but deep-copies and re-parses every request's URL.

Errors are raised exactly as ``get_secret`` raises them, so ``_translate.classify`` needs no
change: azure-core's public ``map_error`` with the SDK's own status map (401, 404, 409, 304),
then ``HttpResponseError`` (which parses the service's ``{"error": {...}}`` body into ``.error``)
for any other status >= 400. A body that is not the expected JSON raises ``DecodeError``
without the response attached, so nothing of a value can reach a message.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from azure.core import AsyncPipelineClient
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
    map_error,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy, SansIOHTTPPolicy, UserAgentPolicy
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import AsyncHttpResponse, HttpRequest
from azure.keyvault.secrets.aio import SecretClient

__all__ = ["RawSecret", "RawSecretReader", "get_secret_raw"]

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


# How long an Authorization header the challenge policy attached to a successful request is
# reused on the direct path. The policy replaces tokens within 300 s of expiry before attaching
# them, so with ordinary token lifetimes (an hour or more) a header reused for at most 60 s is
# never expired when sent; should a credential issue shorter-lived tokens, the vault's 401 sends
# the request back through the policy, which fetches a new one. After the window the next
# request goes through the policy again, which refreshes the token if needed.
_REUSE_S = 60.0
_DEFAULT_TIMEOUT_S = 300.0  # azure-core's default connection and read timeouts


class RawSecretReader:
    """GETs secrets of one vault as :class:`RawSecret`; close with :meth:`close` (idempotent).

    With ``policies`` (kvconfig's trimmed list, shared with the ``SecretClient``) requests go
    through an ``AsyncPipelineClient`` over ``transport``; without (the SDK's default pipeline
    is in use) through ``client.send_request``.

    With ``session`` as well, once the pipeline has authorised a request that succeeded, further
    GETs go straight to aiohttp with that ``Authorization`` header for up to 60 s (the direct
    path, no azure-core per request). It keeps the pipeline's semantics: azure-core's
    transport exceptions and timeouts (same mapping as ``AioHttpTransport``), the same
    exceptions for error statuses (:func:`_result`), and a 401 (token revoked, CAE claims
    challenge, vault moved tenant) drops the header and re-sends through the challenge policy,
    which handles it as the SDK does.
    """

    def __init__(
        self,
        client: SecretClient,
        *,
        policies: list[AsyncHTTPPolicy[Any, Any] | SansIOHTTPPolicy[Any, Any]] | None = None,
        transport: AsyncHttpTransport[Any, Any] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._client = client
        self._base = client.vault_url.rstrip("/")
        self._query = f"?api-version={client.api_version}"
        self._pipeline: AsyncPipelineClient[HttpRequest, AsyncHttpResponse] | None = None
        self._session = session
        self._headers: dict[str, str] | None = None
        self._headers_until = 0.0
        self.direct_requests = 0  # how many GETs took the direct path (tests, diagnostics)
        if policies is not None and transport is not None:
            user_agent = next(
                (p.user_agent for p in policies if isinstance(p, UserAgentPolicy)), None
            )
            self._base_headers = {"Accept": "application/json"}
            if user_agent:
                self._base_headers["User-Agent"] = user_agent
            # _Replay sits between the (shared) challenge policy and the transport, so it is in
            # the SDK client's path too; without the reader's option it only passes requests on.
            self._pipeline = AsyncPipelineClient(
                base_url=self._base,
                policies=[_CaptureAuthorization(self), *policies, _Replay()],
                transport=transport,
            )

    def _authorized(self, authorization: str) -> None:
        """Called by the pipeline after a 200 that the challenge policy authorised."""
        if self._session is not None:
            self._headers = {**self._base_headers, "Authorization": authorization}
            self._headers_until = time.monotonic() + _REUSE_S

    async def get(self, name: str, version: str | None = None, **kwargs: Any) -> RawSecret:
        """``await client.get_secret(name, version, **kwargs)``, without the SDK's models.

        ``kwargs`` go to the pipeline as for ``get_secret`` (``connection_timeout``,
        ``read_timeout``, ...). Raises what ``get_secret`` raises for the same response.
        """
        path = f"/secrets/{quote(name, safe='')}/{quote(version or '', safe='')}{self._query}"
        headers = self._headers
        if headers is not None and time.monotonic() < self._headers_until:
            raw = await self._direct(name, self._base + path, headers, kwargs)
            if isinstance(raw, RawSecret):
                return raw
            # A 401: the token was refused (revoked, CAE claims challenge, ...). The challenge
            # policy handles this very response as if it had sent the request itself, so the
            # vault sees exactly the requests get_secret would have made.
            kwargs = {**kwargs, _REPLAY_OPTION: raw}
        if self._pipeline is None:
            response = await self._client.send_request(HttpRequest("GET", path), **kwargs)
        else:
            request = HttpRequest("GET", self._base + path)
            response = await self._pipeline.send_request(request, **kwargs)
        return _result(name, response)

    async def _direct(
        self, name: str, url: str, headers: dict[str, str], options: dict[str, Any]
    ) -> RawSecret | _PlainResponse:
        """One GET on the session; a 401 is returned for the challenge policy to handle."""
        session = self._session
        assert session is not None
        timeout = aiohttp.ClientTimeout(
            sock_connect=options.get("connection_timeout", _DEFAULT_TIMEOUT_S),
            sock_read=options.get("read_timeout", _DEFAULT_TIMEOUT_S),
        )
        self.direct_requests += 1
        try:
            async with session.get(
                url, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                body = await response.read()
                status, reason, response_headers = (
                    response.status,
                    response.reason,
                    response.headers,
                )
        # The mapping of azure-core's AioHttpTransport, so classification does not change.
        except aiohttp.ClientResponseError as err:
            raise ServiceResponseError(err, error=err) from err
        except aiohttp.ConnectionTimeoutError as err:
            raise ServiceRequestTimeoutError(err, error=err) from err
        except TimeoutError as err:
            raise ServiceResponseTimeoutError(err, error=err) from err
        except aiohttp.ClientError as err:
            raise ServiceRequestError(err, error=err) from err
        plain = _PlainResponse(status, reason or "", response_headers, body)
        if status == 401:
            if self._headers is headers:
                self._headers = None
            return plain
        return _result(name, plain)

    async def close(self) -> None:
        """Close the pipeline (a transport built on a shared session leaves the session open)."""
        self._session = None
        self._headers = None
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            await pipeline.close()


class _CaptureAuthorization(SansIOHTTPPolicy[HttpRequest, AsyncHttpResponse]):
    """First in the reader's pipeline: sees the request as the challenge policy sent it."""

    def __init__(self, reader: RawSecretReader) -> None:
        self._reader = reader

    def on_response(
        self,
        request: PipelineRequest[HttpRequest],
        response: PipelineResponse[HttpRequest, AsyncHttpResponse],
    ) -> None:
        if response.http_response.status_code == 200:
            authorization = request.http_request.headers.get("Authorization")
            if authorization:
                self._reader._authorized(authorization)


_REPLAY_OPTION = "kvconfig_replay_401"


class _Replay(AsyncHTTPPolicy[HttpRequest, AsyncHttpResponse]):
    """Answers a request carrying :data:`_REPLAY_OPTION` with that (401) response, once.

    Placed right after the challenge policy: a 401 the direct path received is handed to the
    policy as the answer to the request it just authorised, so it runs its own challenge flow
    (new token, CAE claims, one re-send, give up on a second 401) with no extra request.
    """

    async def send(
        self, request: PipelineRequest[HttpRequest]
    ) -> PipelineResponse[HttpRequest, AsyncHttpResponse]:
        replay = request.context.options.pop(_REPLAY_OPTION, None)
        if replay is None:
            return await self.next.send(request)
        return PipelineResponse(request.http_request, replay, context=request.context)


class _PlainResponse:
    """What azure-core's exceptions read from a response: status, reason, headers, body."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], body: bytes) -> None:
        self.status_code = status
        self.reason = reason
        self.headers = headers
        self.content = body
        self.content_type = headers.get("Content-Type")

    def body(self) -> bytes:
        return self.content

    def text(self, encoding: str | None = None) -> str:
        return self.content.decode(encoding or "utf-8", errors="replace")


async def get_secret_raw(
    client: SecretClient, name: str, version: str | None = None, **kwargs: Any
) -> RawSecret:
    """One GET through ``client.send_request``; see :meth:`RawSecretReader.get`."""
    return await RawSecretReader(client).get(name, version, **kwargs)


def _result(name: str, response: AsyncHttpResponse | _PlainResponse) -> RawSecret:
    status = response.status_code
    if status != 200:
        map_error(status_code=status, response=response, error_map=_ERROR_MAP)  # type: ignore[arg-type]
        raise HttpResponseError(response=response)  # type: ignore[arg-type]
    try:
        return _parse(json.loads(response.content))
    except (ValueError, TypeError, AttributeError, KeyError):
        pass
    # Raised outside the handler: `from None` would still keep the JSON error (whose `doc` is
    # the body, value included) as __context__.
    error = DecodeError(f"the vault's answer for secret {name!r} is not a secret bundle")
    error.status_code = status  # the response itself stays out: its body may hold the value
    raise error


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
