"""Every error row of the reference and every bad-input case, with raw HTTPS requests."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from emulator_helpers import Raw

from kvconfig.emulator import KeyVaultEmulator

CHALLENGE = (
    'Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47",'
    ' resource="https://vault.azure.net"'
)
NOT_FOUND = (
    "A secret with (name/id) {} was not found in this key vault. If you recently deleted this "
    "secret you may be able to recover it using the correct recovery command. For help resolving "
    "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)


def _error(body: object) -> dict[str, object]:
    assert isinstance(body, dict) and set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    return error


@pytest.mark.parametrize(
    "auth", [None, "", "Bearer", "Bearer ", "Bearer garbage", "Basic abc", "Bearer kvemu.e30.AAAA"]
)
async def test_challenge_for_missing_or_unknown_tokens(raw: Raw, auth: str | None) -> None:
    status, body, headers = await raw.request("GET", "/secrets/x/", auth=auth)
    assert status == 401
    assert headers["WWW-Authenticate"] == CHALLENGE
    assert body == {
        "error": {
            "code": "Unauthorized",
            "message": "AKV10000: Request is missing a Bearer or PoP token.",
        }
    }


async def test_challenge_is_decided_before_the_body(raw: Raw) -> None:
    # Malformed body, wrong content type, bad name, no api-version: still the challenge.
    status, _, headers = await raw.request(
        "PUT", "/secrets/bad_name", auth=None, api_version=None, data=b"{not json"
    )
    assert status == 401 and "WWW-Authenticate" in headers


async def test_token_from_another_emulator_is_refused(raw: Raw, keyvault_ca: object) -> None:
    async with KeyVaultEmulator() as other, other.credential() as cred:
        token = (await cred.get_token("https://vault.azure.net/.default")).token
    status, _, _ = await raw.request("GET", "/secrets", auth=f"Bearer {token}")
    assert status == 401


async def test_secret_not_found(raw: Raw) -> None:
    status, body, headers = await raw.request("GET", "/secrets/missing/")
    assert status == 404
    assert _error(body) == {"code": "SecretNotFound", "message": NOT_FOUND.format("missing")}
    assert headers["x-ms-error-code"] == "SecretNotFound"
    raw.emu.seed({"present": "1"})
    status, body, _ = await raw.request("GET", "/secrets/present/" + "a" * 32)
    assert status == 404 and _error(body)["code"] == "SecretNotFound"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/deletedsecrets/ghost"),
        ("DELETE", "/deletedsecrets/ghost"),
        ("POST", "/deletedsecrets/ghost/recover"),
    ],
)
async def test_deleted_secret_not_found(raw: Raw, method: str, path: str) -> None:
    status, body, _ = await raw.request(method, path)
    assert status == 404
    assert _error(body) == {"code": "SecretNotFound", "message": "Deleted Secret not found: ghost"}


async def test_disabled_secret_is_403(raw: Raw) -> None:
    version = raw.emu.set_secret("off", "v", enabled=False)
    for path in ("/secrets/off/", "/secrets/off", f"/secrets/off/{version}"):
        status, body, _ = await raw.request("GET", path)
        assert status == 403
        assert _error(body) == {
            "code": "Forbidden",
            "message": "Operation get is not allowed on a disabled secret.",
            "innererror": {"code": "SecretDisabled"},
        }


async def test_set_on_deleted_name_is_409(raw: Raw) -> None:
    raw.emu.seed({"Old": "1"})
    raw.emu.delete_secret("old")
    status, body, _ = await raw.request("PUT", "/secrets/old", json={"value": "2"})
    assert status == 409
    assert _error(body) == {
        "code": "Conflict",
        "message": "Secret Old is currently in a deleted but recoverable state, and its name "
        "cannot be reused; in this state, the secret can only be recovered or purged.",
        "innererror": {"code": "ObjectIsDeletedButRecoverable"},
    }


@pytest.mark.parametrize("name", ["bad_name", "has%20space", "a" * 128, "dot.name"])
async def test_invalid_name_is_400(raw: Raw, name: str) -> None:
    for method, kwargs in (("GET", {}), ("PUT", {"json": {"value": "x"}})):
        status, body, _ = await raw.request(method, f"/secrets/{name}", **kwargs)
        assert status == 400
        shown = name.replace("%20", " ")
        assert _error(body) == {
            "code": "BadParameter",
            "message": f"The request URI contains an invalid name: {shown}",
        }


async def test_name_limits_and_case(raw: Raw) -> None:
    status, body, _ = await raw.request("PUT", "/secrets/" + "A" * 127, json={"value": "x"})
    assert status == 200
    status, body, _ = await raw.request("PUT", "/secrets/0-Digit-First", json={"value": "x"})
    assert status == 200
    status, body, _ = await raw.request("GET", "/secrets/0-digit-first/")
    assert status == 200 and body is not None
    assert "/secrets/0-Digit-First/" in body["id"]


async def test_throttled_429_body(raw: Raw) -> None:
    raw.emu.faults.fail_next(1, status=429)
    status, body, headers = await raw.request("GET", "/secrets")
    assert status == 429
    assert _error(body) == {
        "code": "Throttled",
        "message": "Request was not processed because too many requests were received. "
        "Reason: VaultRequestTypeLimitReached",
    }
    assert "Retry-After" not in headers


async def test_value_and_content_type_limits(raw: Raw) -> None:
    limit = 25 * 1024
    ok = await raw.request("PUT", "/secrets/big", json={"value": "x" * limit})
    assert ok[0] == 200
    status, body, _ = await raw.request("PUT", "/secrets/big", json={"value": "x" * (limit + 1)})
    assert status == 400 and _error(body)["code"] == "BadParameter"
    # The limit counts UTF-8 bytes, not characters.
    status, _, _ = await raw.request("PUT", "/secrets/big", json={"value": "é" * (limit // 2 + 1)})
    assert status == 400
    ct = {"value": "x", "contentType": "c" * 255}
    assert (await raw.request("PUT", "/secrets/ct", json=ct))[0] == 200
    ct["contentType"] = "c" * 256
    status, body, _ = await raw.request("PUT", "/secrets/ct", json=ct)
    assert status == 400 and _error(body)["code"] == "BadParameter"
    status, _, _ = await raw.request("PATCH", "/secrets/ct/", json={"contentType": "c" * 256})
    assert status == 400


JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}
BIG = b"<more than 1 MiB>"
BAD_INPUTS: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("malformed JSON", "PUT", "/secrets/a", {"data": b"{nope", "headers": JSON}, 400),
    ("body not an object", "PUT", "/secrets/a", {"json": ["value"]}, 400),
    ("value missing", "PUT", "/secrets/a", {"json": {"contentType": "x"}}, 400),
    ("value not a string", "PUT", "/secrets/a", {"json": {"value": 5}}, 400),
    ("tags not strings", "PUT", "/secrets/a", {"json": {"value": "v", "tags": {"k": 1}}}, 400),
    ("bad attributes", "PUT", "/secrets/a", {"json": {"value": "v", "attributes": 3}}, 400),
    ("bad exp", "PATCH", "/secrets/a/", {"json": {"attributes": {"exp": "soon"}}}, 400),
    ("wrong content type", "PUT", "/secrets/a", {"data": b'{"value":"v"}'}, 415),
    (
        "text/plain",
        "PUT",
        "/secrets/a",
        {"data": "x", "headers": TEXT},
        415,
    ),
    (
        "body over 1 MiB",
        "PUT",
        "/secrets/a",
        {"data": BIG, "headers": JSON},
        413,
    ),
    ("unknown route", "GET", "/keys/a", {}, 404),
    ("unknown nested route", "GET", "/secrets/a/b/c/d", {}, 404),
    ("root", "GET", "/", {}, 404),
    ("unknown method", "POST", "/secrets/a", {}, 405),
    ("delete a version", "DELETE", "/secrets/a/" + "0" * 32, {}, 405),
    ("put on list", "PUT", "/secrets", {}, 405),
    ("maxresults too big", "GET", "/secrets", {"params": {"maxresults": "26"}}, 400),
    ("maxresults zero", "GET", "/secrets", {"params": {"maxresults": "0"}}, 400),
    ("maxresults text", "GET", "/secrets", {"params": {"maxresults": "ten"}}, 400),
    ("bad skiptoken", "GET", "/secrets", {"params": {"$skiptoken": "!!"}}, 400),
    ("bad backup blob", "POST", "/secrets/restore", {"json": {"value": "AAAA"}}, 400),
    ("backup blob not base64", "POST", "/secrets/restore", {"json": {"value": "*"}}, 400),
    ("restore without value", "POST", "/secrets/restore", {"json": {}}, 400),
]


@pytest.mark.parametrize(
    ("case", "method", "path", "kwargs", "expected"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
async def test_bad_input_gets_an_azure_shaped_4xx(
    raw: Raw, case: str, method: str, path: str, kwargs: dict[str, Any], expected: int
) -> None:
    raw.emu.seed({"a": "1"})
    if kwargs.get("data") is BIG:  # a stream, as aiohttp warns about big in-memory bodies
        kwargs = {**kwargs, "data": io.BytesIO(b" " * (1024 * 1024 + 1))}
    status, body, headers = await raw.request(method, path, **kwargs)
    assert status == expected, body
    error = _error(body)
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert headers["x-ms-error-code"] == error["code"]
    if status == 405:
        assert headers["Allow"]
    # ... and the server keeps serving.
    status, body, _ = await raw.request("GET", "/secrets/a/")
    assert status == 200 and body is not None and body["value"] == "1"
    assert all(r.status < 500 for r in raw.emu.requests)


@pytest.mark.parametrize("api_version", [None, "", "7.7", "2099-01-01", "latest"])
async def test_invalid_api_version(raw: Raw, api_version: str | None) -> None:
    status, body, _ = await raw.request("GET", "/secrets", api_version=api_version)
    assert status == 400
    assert _error(body)["code"] == "BadParameter"


async def test_response_headers(raw: Raw) -> None:
    status, _, headers = await raw.request(
        "GET", "/secrets", headers={"x-ms-client-request-id": "abc-123"}
    )
    assert status == 200
    assert headers["x-ms-client-request-id"] == "abc-123"
    assert len(headers["x-ms-request-id"]) == 36
    assert headers["x-ms-keyvault-service-version"]
    assert headers["Content-Type"] == "application/json; charset=utf-8"


async def test_shapes_omit_absent_fields(raw: Raw) -> None:
    status, body, _ = await raw.request("PUT", "/secrets/plain", json={"value": "v"})
    assert status == 200 and body is not None
    assert set(body) == {"value", "id", "attributes"}
    attrs = body["attributes"]
    assert set(attrs) == {
        "enabled",
        "created",
        "updated",
        "recoverableDays",
        "recoveryLevel",
    }
    assert isinstance(attrs["created"], int) and attrs["recoverableDays"] == 90
    version = body["id"].rsplit("/", 1)[1]
    assert len(version) == 32 and int(version, 16) >= 0 and version == version.lower()
    assert body["id"] == f"{raw.emu.vault_url}/secrets/plain/{version}"

    status, body, _ = await raw.request(
        "PATCH", "/secrets/plain/", json={"attributes": {"exp": 1800000000, "nbf": 1700000000}}
    )
    assert body is not None and "value" not in body
    assert body["attributes"]["exp"] == 1800000000 and body["attributes"]["nbf"] == 1700000000

    _, listing, _ = await raw.request("GET", "/secrets")
    assert listing is not None and listing["nextLink"] is None
    assert listing["value"][0]["id"] == f"{raw.emu.vault_url}/secrets/plain"
    assert "value" not in listing["value"][0]

    _, deleted, _ = await raw.request("DELETE", "/secrets/plain")
    assert deleted is not None and "value" not in deleted
    assert deleted["recoveryId"] == f"{raw.emu.vault_url}/deletedsecrets/plain"
    assert deleted["scheduledPurgeDate"] - deleted["deletedDate"] == 90 * 86400

    status, body, _ = await raw.request("DELETE", "/deletedsecrets/plain")
    assert status == 204 and body is None


async def test_next_link_is_absolute_and_opaque(raw: Raw) -> None:
    raw.emu.seed({f"n{i}": "v" for i in range(3)})
    _, page, _ = await raw.request("GET", "/secrets", params={"maxresults": "2"})
    assert page is not None
    link = page["nextLink"]
    assert link.startswith(f"{raw.emu.vault_url}/secrets?api-version=2026-04-01&$skiptoken=")
    assert link.endswith("&maxresults=2")
    token = link.split("$skiptoken=")[1].split("&")[0]
    assert "n1" not in token and not token.isdigit()
    async with raw.session.get(link, headers={"Authorization": f"Bearer {raw.token}"}) as resp:
        rest = json.loads(await resp.read())
    assert [i["id"].rsplit("/", 1)[1] for i in rest["value"]] == ["n2"]
    assert rest["nextLink"] is None


async def test_expect_100_continue_and_unparseable_http(
    keyvault_emulator: KeyVaultEmulator,
) -> None:
    """``Expect: 100-continue`` gets its interim answer, then the normal one; a request aiohttp
    cannot parse gets aiohttp's own 400 text/plain (public API only), and serving goes on."""
    import asyncio
    from urllib.parse import urlsplit

    emu = keyvault_emulator
    url = urlsplit(emu.vault_url)
    async with emu.credential() as credential:
        token = (await credential.get_token("https://vault.azure.net/.default")).token
    body = b'{"value":"v"}'
    reader, writer = await asyncio.open_connection(
        url.hostname, url.port, ssl=emu.ssl_context(), server_hostname=url.hostname
    )
    writer.write(
        b"PUT /secrets/continued?api-version=7.5 HTTP/1.1\r\nHost: %s\r\n"
        b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n"
        % (url.netloc.encode(), token.encode(), len(body))
    )
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    assert (await reader.readline()).startswith(b"HTTP/1.1 200 ")
    writer.close()
    reader2, writer2 = await asyncio.open_connection(
        url.hostname, url.port, ssl=emu.ssl_context(), server_hostname=url.hostname
    )
    writer2.write(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await reader2.read()
    writer2.close()
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert b"Content-Type: text/plain" in head and text == b"*"  # the reason: the bad target
    assert emu.requests[-1].path == "/secrets/continued"
    async with emu.secret_client() as client:
        assert (await client.get_secret("continued")).value == "v"
