"""Hostile input to the emulator: whatever arrives, an Azure-shaped 4xx, never a 5xx, no traceback,
and the server keeps serving. Also: loopback only, and TLS only for the vault API.

Inputs are generated with hypothesis. The emulator runs on the test's event loop, so hypothesis
runs in a worker thread (:func:`explore`) and hands each example back to the loop with
``run_coroutine_threadsafe``: full shrinking, one emulator per test, no fixture re-use across
examples. Examples are derandomized (same inputs every run) so CI is reproducible.

Malformed HTTP (request lines, headers, framing, ``..`` in paths) goes through raw TLS sockets,
because a client library normalizes or refuses it; bodies, content types and tokens go through a
raw aiohttp session with the emulator's CA and a valid emulator token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import re
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote

import aiohttp
import pytest
from _emulator_cli import EmulatorProcess, listening_addresses
from _figures import record
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from kvconfig.emulator import KeyVaultEmulator
from kvconfig.emulator._store import _BACKUP_KEY as BACKUP_KEY
from kvconfig.emulator._store import _BACKUP_PREFIX as BACKUP_PREFIX

T = TypeVar("T")

# Per hypothesis test; the whole file takes ~15 s on a 2-core box (budget: 60 s).
MAX_EXAMPLES = 200
API = "api-version=7.4"
CHALLENGE_PREFIX = 'Bearer authorization="https://login.microsoftonline.com/'
SEEDED_VALUE = "seeded-value-c4n4ry"


# -- answers and what every error answer must look like ----------------------------------------


@dataclass(frozen=True)
class Answer:
    """One HTTP answer; ``status`` 0 means the connection closed without one."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""


def assert_azure_error(answer: Answer, context: object) -> None:
    """A 4xx with ``{"error": {"code", "message"}}`` as JSON and no traceback text."""
    where = f"{context!r} -> {answer.status} {answer.body[:300]!r}"
    assert 400 <= answer.status < 500, where
    assert answer.headers.get("content-type", "").startswith("application/json"), where
    text = answer.body.decode("utf-8", "replace")
    assert "Traceback" not in text and 'File "' not in text, where
    assert SEEDED_VALUE not in text, where  # an error never carries a secret's value
    doc = json.loads(answer.body)
    assert isinstance(doc, dict) and set(doc) == {"error"}, where
    error = doc["error"]
    assert isinstance(error, dict), where
    assert isinstance(error.get("code"), str) and error["code"], where
    assert isinstance(error.get("message"), str) and error["message"], where


def assert_no_5xx(answer: Answer, context: object, *, head: bool = False) -> None:
    """Success, or an Azure-shaped 4xx (a HEAD answer has no body: its error code header)."""
    assert answer.status != 0, f"{context!r}: connection closed without an answer"
    assert answer.status < 500, f"{context!r} -> {answer.status} {answer.body[:300]!r}"
    if answer.status >= 400:
        if is_unparseable_answer(answer):
            return
        if head:
            assert answer.headers.get("x-ms-error-code"), context
        else:
            assert_azure_error(answer, context)


def is_unparseable_answer(answer: Answer) -> bool:
    """aiohttp's own answer to a request it cannot parse as HTTP (a ``*`` target, an over-long
    line, a malformed header): 400 ``text/plain`` naming the reason, before the vault API sees
    the request (no ``x-ms-request-id``). The emulator uses only aiohttp's public API, which has
    no hook to reshape it; the README documents it. Never a traceback."""
    if answer.status != 400 or "x-ms-request-id" in answer.headers:
        return False
    if not answer.headers.get("content-type", "").startswith("text/plain"):
        return False
    text = answer.body.decode("utf-8", "replace")
    assert "Traceback" not in text and 'File "' not in text and SEEDED_VALUE not in text
    return True


# -- running hypothesis against the emulator on the test's loop ---------------------------------


async def explore(
    strategy: st.SearchStrategy[T],
    check: Callable[[T], Awaitable[None]],
    max_examples: int = MAX_EXAMPLES,
) -> int:
    """Run ``check`` on examples of ``strategy``; return how many inputs were tried."""
    loop = asyncio.get_running_loop()
    tried = 0

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def prop(case: T) -> None:
        nonlocal tried
        tried += 1
        asyncio.run_coroutine_threadsafe(check(case), loop).result(timeout=120)

    await asyncio.to_thread(prop)
    return tried


# -- clients ----------------------------------------------------------------------------------


class Client:
    """Raw requests to one emulator: aiohttp with a valid token, or bytes over TLS."""

    def __init__(self, emu: KeyVaultEmulator, session: aiohttp.ClientSession, token: str) -> None:
        self.emu = emu
        self.session = session
        self.token = token
        self.port = URL(emu.vault_url).port

    async def http(
        self,
        method: str,
        path_and_query: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        auth: bool = True,
    ) -> Answer:
        """An aiohttp request; ``path_and_query`` is sent as given (already percent-encoded)."""
        all_headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        all_headers.update(headers or {})
        skip = [] if "Content-Type" in all_headers else ["Content-Type"]
        url = URL(self.emu.vault_url + path_and_query, encoded=True)
        # BytesIO: aiohttp warns about (and would block the loop on) large raw bytes bodies.
        payload = None if data is None else io.BytesIO(data)
        async with self.session.request(
            method, url, headers=all_headers, data=payload, skip_auto_headers=skip
        ) as resp:
            body = await resp.read()
            return Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, body)

    async def raw(self, request: bytes, *, expect_answer: bool = True) -> Answer:
        """Send bytes over TLS; read the answer to EOF (or just hang up if not expected)."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.emu.ssl_context(), server_hostname="127.0.0.1"
        )
        received = b""
        try:
            with contextlib.suppress(ConnectionError):
                writer.write(request)
                await writer.drain()
            if expect_answer:
                received = await asyncio.wait_for(_read_to_eof(reader), 30)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
        return parse_answer(received)

    def request_bytes(
        self,
        method: bytes = b"GET",
        target: bytes = b"/secrets/hostile?" + API.encode(),
        *,
        version: bytes = b"HTTP/1.1",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        content_length: bool = True,
        auth: bool = True,
    ) -> bytes:
        """A request as bytes, ``Connection: close``, with the valid token unless told not."""
        lines = [method + b" " + target + b" " + version, b"Host: 127.0.0.1"]
        if auth:
            lines.append(b"Authorization: Bearer " + self.token.encode())
        lines += [name + b": " + value for name, value in headers or []]
        if content_length and body:
            lines.append(b"Content-Length: %d" % len(body))
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _read_to_eof(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parse_answer(raw: bytes) -> Answer:
    if not raw:
        return Answer(0)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Answer(int(status_line.split()[1]), headers, body)


@pytest.fixture
async def client(keyvault_emulator: KeyVaultEmulator) -> AsyncIterator[Client]:
    async with (
        keyvault_emulator.credential() as credential,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=keyvault_emulator.ssl_context()),
            auto_decompress=False,
        ) as session,
    ):
        token = (await credential.get_token("https://vault.azure.net/.default")).token
        keyvault_emulator.seed({"hostile": SEEDED_VALUE, "other": "x"})
        yield Client(keyvault_emulator, session, token)


@pytest.fixture
def error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """Error records logged so far (the emulator logs its own bugs; aiohttp logs handler errors)."""
    caplog.set_level(logging.WARNING)

    def errors() -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}"
            for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith(("kvconfig", "aiohttp", "asyncio"))
        ]

    yield errors


async def assert_still_serving(client: Client, errors: Callable[[], list[str]], kind: str) -> None:
    """A normal SDK round trip works; nothing was answered 5xx; nothing was logged as an error."""
    emu = client.emu
    async with emu.secret_client() as sdk:
        await sdk.set_secret("still-serving", "yes")
        assert (await sdk.get_secret("still-serving")).value == "yes"
        assert (await sdk.get_secret("hostile")).value == SEEDED_VALUE
    fives = [r for r in emu.requests if r.status >= 500]
    record(f"emulator.hostile.answers_5xx.{kind}", len(fives), target="0")
    assert not fives, fives[:5]
    assert errors() == []


# -- strategies --------------------------------------------------------------------------------

NAME = st.from_regex(r"[0-9a-zA-Z-]{1,24}", fullmatch=True)
SURROGATE = st.characters(categories=["Cs"])
ANY_TEXT = st.text(st.characters(codec=None) | SURROGATE, max_size=40)

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | ANY_TEXT
)
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)
ATTRIBUTES = st.fixed_dictionaries(
    {}, optional={"enabled": JSON_ANY, "nbf": JSON_ANY, "exp": JSON_ANY, "created": JSON_ANY}
)
SECRET_DOC = st.fixed_dictionaries(
    {},
    optional={
        "value": ANY_TEXT | JSON_ANY | st.integers(25 * 1024 - 2, 25 * 1024 + 2).map("é".__mul__),
        "contentType": ANY_TEXT | JSON_ANY | st.integers(250, 300).map("c".__mul__),
        "tags": st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=3) | JSON_ANY,
        "attributes": ATTRIBUTES | JSON_ANY,
    },
)


class Body(bytes):
    """Request body bytes with a short repr (hypothesis prints examples; bodies reach 1 MiB)."""

    def __repr__(self) -> str:
        return f"Body({bytes(self[:120])!r}... {len(self)} bytes)"


def _dump(doc: object) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


BODY = st.one_of(
    SECRET_DOC.map(_dump),
    JSON_ANY.map(_dump),
    st.tuples(SECRET_DOC.map(_dump), st.integers(0, 60)).map(lambda t: t[0][: t[1]]),  # truncated
    st.binary(max_size=200),
    st.integers(1000, 200_000).map(lambda n: b'{"value":"x","tags":' + b"[" * n + b"]" * n + b"}"),
    st.integers(1024 * 1024 - 16, 1024 * 1024 + 64).map(lambda n: b'{"value":"' + b"v" * n + b'"}'),
    st.just(b'{"value":"x","attributes":{"exp":1' + b"0" * 5000 + b"}}"),
).map(Body)
CONTENT_TYPE = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "APPLICATION/JSON",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jso",
            "",
        ]
    ),
    st.none(),
    st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=30),
)
CONTENT_ENCODING = st.sampled_from([None, None, None, "gzip", "deflate", "br", "identity", "zz"])


@dataclass(frozen=True)
class BodyCase:
    method: str
    path: str
    body: bytes
    content_type: str | None
    content_encoding: str | None


BODY_CASES = st.builds(
    BodyCase,
    method=st.sampled_from(["PUT", "PATCH", "POST"]),
    path=st.sampled_from(
        ["/secrets/hostile", "/secrets/fresh-name", "/secrets/hostile/versions", "/secrets/restore"]
    ),
    body=BODY,
    content_type=CONTENT_TYPE,
    content_encoding=CONTENT_ENCODING,
)


@pytest.mark.slow
async def test_hostile_bodies_and_content_types(
    client: Client, error_logs: Callable[[], list[str]]
) -> None:
    """Malformed, truncated, deep, oversize or mistyped bodies: 2xx or an Azure-shaped 4xx."""

    async def check(case: BodyCase) -> None:
        headers = {}
        if case.content_type is not None:
            headers["Content-Type"] = case.content_type
        if case.content_encoding is not None:
            headers["Content-Encoding"] = case.content_encoding
        path = case.path
        if case.method == "PATCH" and path == "/secrets/hostile/versions":
            path = "/secrets/hostile/" + "0" * 32
        answer = await client.http(case.method, f"{path}?{API}", headers=headers, data=case.body)
        assert_no_5xx(answer, case)

    tried = await explore(BODY_CASES, check)
    record("emulator.hostile.tried.bodies", tried)
    await assert_still_serving(client, error_logs, "bodies")


HOSTILE_SEGMENTS = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2E",
    "%2e",
    "%2f",
    "..%2f..%2fetc%2fpasswd",
    "%5c..%5c",
    "%00",
    "%ff%fe",
    "%",
    "%zz",
    "a%2fb",
    "%c0%ae%c0%ae",
    "%e2%80%ae",
    "secrets",
    "deletedsecrets",
    "versions",
    "backup",
    "restore",
    "recover",
    "hostile",
    "",
]
SEGMENT = st.one_of(
    st.sampled_from(HOSTILE_SEGMENTS),
    NAME,
    st.text(st.characters(codec="utf-8"), max_size=30).map(lambda t: quote(t, safe="")),
    st.text(st.characters(min_codepoint=0x80, codec="utf-8"), min_size=1, max_size=8).map(quote),
    st.integers(120, 3000).map("a".__mul__),
)
PATH = st.one_of(
    # asterisk and absolute forms, encoded line breaks
    st.sampled_from(["*", "http://127.0.0.1/secrets/hostile", "https://evil.example/secrets"]),
    st.sampled_from(["/secrets/%0A", "/secrets/hostile%0A", "/%0d%0a", "/secrets/a%0Db"]),
    st.lists(SEGMENT, max_size=5).map(lambda parts: "/" + "/".join(parts)),
    st.tuples(
        st.sampled_from(["/secrets/", "/deletedsecrets/", "//secrets/", "/secrets/../secrets/"]),
        SEGMENT,
        st.sampled_from(["", "/", "/versions", "/backup", "/recover", "/" + "a" * 32, "/../x"]),
    ).map("".join),
)
API_VERSION = st.one_of(
    st.none(),
    st.sampled_from(["7.4", "2026-04-01", "7.9", "", "latest", "7.4%20", "07.4", "7.4,7.5"]),
    st.text(max_size=30).map(lambda t: quote(t, safe="")),
)
QUERY_EXTRA = st.lists(
    st.tuples(
        st.sampled_from(["maxresults", "$skiptoken", "api-version", "x"])
        | st.text(max_size=10).map(lambda t: quote(t, safe="")),
        st.one_of(
            st.text(max_size=40).map(lambda t: quote(t, safe="")),
            st.integers(-(2**64), 2**64).map(str),
            st.integers(1, 6000).map(lambda n: quote(json.dumps({"NextMarker": "["}) + "[" * n)),
            st.integers(1, 6000).map(lambda n: _b64("[" * n)),
            st.sampled_from(
                ["eyJOZXh0TWFya2VyIjoxfQ", "e30", "W10", "bnVsbA", "%ff", quote("\uff11")]
            ),
        ),
    ),
    max_size=3,
)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@dataclass(frozen=True)
class PathCase:
    method: str
    path: str
    api_version: str | None
    query: list[tuple[str, str]]

    def target(self) -> bytes:
        params = [] if self.api_version is None else [("api-version", self.api_version)]
        query = "&".join(f"{k}={v}" for k, v in params + self.query)
        return (self.path + ("?" + query if query else "")).encode()


PATH_CASES = st.builds(
    PathCase,
    method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "POST", "HEAD", "OPTIONS", "TRACE"]),
    path=PATH,
    api_version=API_VERSION,
    query=QUERY_EXTRA,
)


@pytest.mark.slow
async def test_hostile_paths_names_and_queries(
    client: Client, error_logs: Callable[[], list[str]]
) -> None:
    """``..``, ``%2e%2e``, ``%2f``, unicode, over-long names, bad api-versions, odd queries."""
    client.emu.set_secret("other", "second-version")

    async def check(case: PathCase) -> None:
        body = b'{"value":"v"}' if case.method in {"PUT", "PATCH", "POST"} else b""
        headers = [(b"Content-Type", b"application/json")] if body else []
        request = client.request_bytes(
            case.method.encode(), case.target(), headers=headers, body=body
        )
        answer = await client.raw(request)
        assert_no_5xx(answer, case, head=case.method == "HEAD")

    tried = await explore(PATH_CASES, check)
    record("emulator.hostile.tried.paths", tried)
    await assert_still_serving(client, error_logs, "paths")


VALID_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")  # the service's rule, matched in full
NAME_CANDIDATES = st.one_of(
    NAME,
    st.text(max_size=20),
    st.tuples(NAME, st.sampled_from(["\n", "\r\n", " ", "\t", "\x00", ".", "_", "é", "/"])).map(
        "".join
    ),
    st.tuples(st.sampled_from(["\n", " ", "-", "."]), NAME).map("".join),
    st.integers(125, 130).map("n".__mul__),
    st.sampled_from([".", "..", "...", "-", "--", "restore", "versions", "\u0660", "\uff41"]),
)


@pytest.mark.slow
async def test_secret_names_are_accepted_exactly_when_valid(
    client: Client, error_logs: Callable[[], list[str]]
) -> None:
    """A set succeeds exactly for names matching ``^[0-9a-zA-Z-]{1,127}$`` in full; every other
    name (control characters, a trailing newline, unicode look-alikes, 128 characters, dots) is
    a 4xx, and nothing is created under it."""

    async def check(name: str) -> None:
        target = f"/secrets/{quote(name, safe='')}?{API}".encode()
        headers = [(b"Content-Type", b"application/json")]
        request = client.request_bytes(b"PUT", target, headers=headers, body=b'{"value":"v"}')
        answer = await client.raw(request)
        if VALID_NAME.fullmatch(name):
            assert answer.status == 200, (name, answer)
            doc = json.loads(answer.body)
            # Lookups ignore case and the case of the first creation is kept ("F", then "f").
            assert doc["id"].rsplit("/", 2)[1].lower() == name.lower(), (name, doc["id"])
        else:
            assert_azure_error(answer, name)

    tried = await explore(NAME_CANDIDATES, check)
    record("emulator.hostile.tried.names", tried)
    await assert_still_serving(client, error_logs, "names")


HEADER_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=60)


def _tamper(token: str, index: int, char: str) -> str:
    index %= len(token)
    return token[:index] + char + token[index + 1 :]


@pytest.mark.slow
async def test_missing_or_garbage_tokens_get_the_challenge(
    client: Client, error_logs: Callable[[], list[str]]
) -> None:
    """Any Authorization that is not this emulator's token: 401 with the challenge, nothing else,
    decided before the path, api-version or body are looked at."""
    token = client.token
    authorization = st.one_of(
        st.none(),
        HEADER_TEXT,
        HEADER_TEXT.map("Bearer ".__add__),
        st.tuples(HEADER_TEXT, HEADER_TEXT).map(lambda t: f"Bearer kvemu.{t[0]}.{t[1]}"),
        st.tuples(st.integers(0, 10_000), st.sampled_from("abcXYZ09-_.é ")).map(
            lambda t: "Bearer " + _tamper(token, *t)
        ),
        st.sampled_from(
            [f"Basic {token}", f"bearer{token}", f"Bearer {token}.", f"Bearer {token}="]
        ),
        st.integers(4000, 7000).map(lambda n: "Bearer " + "k" * n),
    ).filter(lambda value: value != f"Bearer {token}")
    # Short origin-form paths only: an over-long request line is refused (400) before auth is
    # looked at, and aiohttp's client URL cannot carry "*" or an absolute form.
    paths = PATH_CASES.filter(lambda c: len(c.target()) < 4000 and c.path.startswith("/"))
    cases = st.tuples(authorization, paths)

    async def check(case: tuple[str | None, PathCase]) -> None:
        auth, path_case = case
        headers = {} if auth is None else {"Authorization": auth}
        answer = await client.http("GET", path_case.target().decode(), headers=headers, auth=False)
        assert answer.status == 401, (case, answer)
        assert answer.headers["www-authenticate"].startswith(CHALLENGE_PREFIX), case
        assert_azure_error(answer, case)

    tried = await explore(cases, check)
    record("emulator.hostile.tried.tokens", tried)
    await assert_still_serving(client, error_logs, "tokens")


@dataclass(frozen=True)
class RawCase:
    """A malformed request: its bytes and whether an answer is due (False: we hang up early)."""

    label: str
    request: bytes
    expect_answer: bool = True
    must_fail: bool = True  # nothing valid in it: a 2xx would mean it got through


def _raw_cases(client: Client) -> st.SearchStrategy[RawCase]:
    req = client.request_bytes
    put = {"method": b"PUT", "target": b"/secrets/raw-target?" + API.encode()}
    json_ct = (b"Content-Type", b"application/json")
    body = b'{"value":"raw"}'
    token = st.from_regex(rb"[A-Z]{1,12}", fullmatch=True)
    # aiohttp's limits (8190-byte lines and fields, 128 headers), just over and well over.
    return st.one_of(
        st.integers(8200, 30_000).map(
            lambda n: RawCase("huge header", req(headers=[(b"X-Big", b"h" * n)]))
        ),
        st.integers(130, 400).map(
            lambda n: RawCase("many headers", req(headers=[(b"X-%d" % i, b"v") for i in range(n)]))
        ),
        st.integers(8200, 30_000).map(
            lambda n: RawCase(
                "huge query", req(target=b"/secrets?" + API.encode() + b"&q=" + b"q" * n)
            )
        ),
        st.integers(8200, 30_000).map(
            lambda n: RawCase(
                "huge path", req(target=b"/secrets/" + b"p" * n + b"?" + API.encode())
            )
        ),
        token.map(lambda m: RawCase("unknown method", req(method=m))),
        st.binary(min_size=1, max_size=80)
        .filter(lambda b: b"\r" not in b and b"\n" not in b)
        .map(lambda line: RawCase("garbage request line", line + b"\r\n\r\n")),
        st.sampled_from([b"HTTP/9.9", b"HTTP/1.1x", b"HTTPS/1.1", b"http/1.1", b"HTTP/1"]).map(
            lambda v: RawCase("bad version", req(version=v))
        ),
        st.sampled_from(
            [b"NoColon", b"Bad Name: x", b"X-Nul: a\x00b", b": empty-name", b"X-Ctl: a\x01b"]
        ).map(lambda h: RawCase("bad header line", req().replace(b"Host:", h + b"\r\nHost:", 1))),
        st.sampled_from([b"-1", b"abc", b"1e3", b"5, 6", b"+15", b"0x0f"]).map(
            lambda n: RawCase(
                "bad content-length",
                req(
                    **put,
                    headers=[json_ct, (b"Content-Length", n)],
                    body=body,
                    content_length=False,
                ),
            )
        ),
        st.just(
            RawCase(
                "content-length and chunked",
                req(
                    **put,
                    headers=[
                        json_ct,
                        (b"Transfer-Encoding", b"chunked"),
                        (b"Content-Length", b"5"),
                    ],
                    body=b"f\r\n" + body + b"\r\n0\r\n\r\n",
                    content_length=False,
                ),
            )
        ),
        st.binary(min_size=1, max_size=30)
        .filter(lambda b: b"\r\n" not in b)
        .map(
            lambda size: RawCase(
                "bad chunk size",
                req(
                    **put,
                    headers=[json_ct, (b"Transfer-Encoding", b"chunked")],
                    body=size + b"\r\n" + body + b"\r\n0\r\n\r\n",
                    content_length=False,
                ),
            )
        ),
        st.sampled_from([b"gzip", b"deflate", b"br", b"zstd", b"gzip, deflate", b"x-unknown"]).map(
            lambda enc: RawCase(
                "content-encoding garbage",
                req(**put, headers=[json_ct, (b"Content-Encoding", enc)], body=b"\x1f\x8bgarbage"),
            )
        ),
        st.just(
            RawCase(
                "deflate bomb",
                req(
                    **put,
                    headers=[json_ct, (b"Content-Encoding", b"deflate")],
                    body=zlib.compress(b'{"value":"' + b"z" * (8 * 1024 * 1024) + b'"}', 9),
                ),
            )
        ),
        HEADER_TEXT.map(
            lambda e: RawCase(
                "expect garbage",
                req(**put, headers=[json_ct, (b"Expect", e.encode())], body=body),
                must_fail=False,
            )
        ),
        st.sampled_from(
            [b"text/plain", b"application/json; charset=x-unknown", b";;;", b"*/*"]
        ).map(
            lambda ct: RawCase(
                "odd content type",
                req(**put, headers=[(b"Content-Type", ct)], body=body),
                must_fail=False,
            )
        ),
        # Truncated: the body or the head is cut short and we hang up. No answer is due; the
        # server must drop it quietly and keep serving.
        st.integers(1, len(body) - 1).map(
            lambda cut: RawCase(
                "truncated body",
                req(
                    **put,
                    headers=[json_ct, (b"Content-Length", b"%d" % len(body))],
                    body=body[:cut],
                    content_length=False,
                ),
                expect_answer=False,
            )
        ),
        st.integers(1, 60).map(
            lambda cut: RawCase("truncated head", req(**put, body=body)[:cut], expect_answer=False)
        ),
        st.just(
            RawCase(
                "unfinished chunks",
                req(
                    **put,
                    headers=[json_ct, (b"Transfer-Encoding", b"chunked")],
                    body=b"f\r\n" + body,
                    content_length=False,
                ),
                expect_answer=False,
            )
        ),
    )


@pytest.mark.slow
async def test_malformed_http(client: Client, error_logs: Callable[[], list[str]]) -> None:
    """Huge headers and query strings, bad request lines, framing and encodings: an
    Azure-shaped 4xx (or, when we hang up mid-request, nothing), never a traceback."""

    async def check(case: RawCase) -> None:
        answer = await client.raw(case.request, expect_answer=case.expect_answer)
        if case.expect_answer:
            assert_no_5xx(answer, case.label)
            assert answer.status >= 400 or not case.must_fail, (case.label, answer.status)

    tried = await explore(_raw_cases(client), check)
    record("emulator.hostile.tried.malformed_http", tried)
    await assert_still_serving(client, error_logs, "malformed_http")


async def test_stalled_connections_do_not_stop_service(
    client: Client, error_logs: Callable[[], list[str]]
) -> None:
    """Many connections that send half a request and stall (slowloris): the vault still answers,
    and they are dropped when the client goes."""
    stalled = []
    try:
        for i in range(100):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", client.port, ssl=client.emu.ssl_context(), server_hostname="127.0.0.1"
            )
            partial = client.request_bytes(b"PUT", body=b'{"value":"stalled"}')
            writer.write(partial[: 20 + i])
            stalled.append(writer)
        await asyncio.gather(*(w.drain() for w in stalled))
        await assert_still_serving(client, error_logs, "stalled_connections")
    finally:
        for writer in stalled:
            writer.close()
        for writer in stalled:
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
    record("emulator.hostile.tried.stalled_connections", len(stalled))
    await assert_still_serving(client, error_logs, "stalled_connections")


def _seal(doc: object, *, raw: bytes | None = None) -> str:
    """A backup blob as the emulator seals it. The key is a constant in the emulator's source,
    so a hostile client can forge blobs with any content."""
    plain = zlib.compress(raw if raw is not None else json.dumps(doc).encode())
    nonce = b"\x00" * 12
    sealed = AESGCM(BACKUP_KEY).encrypt(nonce, plain, None)
    return base64.urlsafe_b64encode(BACKUP_PREFIX + nonce + sealed).decode().rstrip("=")


def _version_doc(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "version": "0" * 32,
        "value": "restored",
        "content_type": None,
        "tags": None,
        "enabled": True,
        "not_before": None,
        "expires": None,
        "created": 1,
        "updated": 1,
    }
    doc.update(changes)
    return doc


VERSION_FIELD_VALUES = st.one_of(JSON_LEAF, st.just([]), st.just({}), st.just("../../x"))
FORGED_VERSION = st.one_of(
    st.builds(_version_doc),
    st.tuples(st.sampled_from(sorted(_version_doc())), VERSION_FIELD_VALUES).map(
        lambda kv: _version_doc(**{kv[0]: kv[1]})
    ),
    st.dictionaries(ANY_TEXT, JSON_LEAF, max_size=3),
    JSON_LEAF,
)
FORGED_DOC = (
    st.fixed_dictionaries(
        {
            "name": st.just("forged") | NAME_CANDIDATES,
            "versions": st.lists(FORGED_VERSION, max_size=3) | JSON_LEAF,
            "deleted_date": st.none() | JSON_LEAF,
            "scheduled_purge": st.none() | JSON_LEAF,
        }
    )
    | JSON_ANY
)
FORGED_BLOB = st.one_of(
    FORGED_DOC.map(_seal),
    # A zlib bomb: ~40 KiB that inflate to 40 MiB (built once: st.deferred caches it).
    st.deferred(lambda: st.just(_seal(None, raw=b" " * (40 * 1024 * 1024)))),
)


@pytest.mark.slow
async def test_forged_backup_blobs(client: Client, error_logs: Callable[[], list[str]]) -> None:
    """Restore of a forged blob (well sealed, hostile content): an Azure-shaped 4xx, or a secret
    that then reads and lists like any other."""

    async def check(blob: str) -> None:
        body = json.dumps({"value": blob}).encode()
        answer = await client.http(
            "POST",
            f"/secrets/restore?{API}",
            headers={"Content-Type": "application/json"},
            data=body,
        )
        assert_no_5xx(answer, blob[:80])
        if answer.status == 200:
            name = json.loads(answer.body)["id"].rsplit("/", 2)[1]
            for path in (f"/secrets/{name}", f"/secrets/{name}/versions", "/secrets"):
                assert_no_5xx(await client.http("GET", f"{path}?{API}"), (blob[:80], path))
            await client.http("DELETE", f"/secrets/{name}?{API}")
            await client.http("DELETE", f"/deletedsecrets/{name}?{API}")

    tried = await explore(FORGED_BLOB, check)
    record("emulator.hostile.tried.backup_blobs", tried)
    await assert_still_serving(client, error_logs, "backup_blobs")


# -- where and how it listens ------------------------------------------------------------------


async def test_binds_to_loopback_only(keyvault_emulator: KeyVaultEmulator) -> None:
    """Every listening socket (vaults, managed identity) is on 127.0.0.1, in process and CLI."""
    second = await keyvault_emulator.add_vault("second")
    urls = [keyvault_emulator.vault_url, second, keyvault_emulator.identity_endpoint]
    for url in urls:
        port = URL(url).port
        assert port is not None
        assert listening_addresses(port) == {"127.0.0.1"}, url

    cli = EmulatorProcess("--vault", "other")  # the defaults, as a user starts it
    try:
        env = await asyncio.to_thread(cli.wait_ready)
        for key in ("VAULT_URL", "VAULT_URL_OTHER", "IDENTITY_ENDPOINT"):
            port = URL(env[key]).port
            assert port is not None
            assert listening_addresses(port) == {"127.0.0.1"}, key
    finally:
        await asyncio.to_thread(cli.stop)
    record("emulator.hostile.listening_sockets_checked", len(urls) + 3)


async def test_vault_api_is_tls_only(client: Client, error_logs: Callable[[], list[str]]) -> None:
    """Plain HTTP to a vault port gets no HTTP answer; the identity endpoint is plain HTTP."""
    emu = client.emu
    port = client.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = client.request_bytes(b"GET", b"/secrets/hostile?" + API.encode())
    writer.write(request)
    received = await asyncio.wait_for(_read_to_eof(reader), 30)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    assert not received.startswith(b"HTTP/"), received[:100]
    assert SEEDED_VALUE.encode() not in received

    async with aiohttp.ClientSession() as plain:
        with pytest.raises(aiohttp.ClientError):
            async with plain.get(
                f"http://127.0.0.1:{port}/secrets/hostile?{API}",
                headers={"Authorization": f"Bearer {client.token}"},
            ) as resp:
                await resp.read()
        # The managed-identity endpoint is plain HTTP by design (loopback only, checked above).
        identity = URL(emu.identity_endpoint).with_query(
            {"api-version": "2019-08-01", "resource": "https://vault.azure.net"}
        )
        async with plain.get(identity, headers={"X-IDENTITY-HEADER": emu.identity_header}) as resp:
            assert resp.status == 200
            assert (await resp.json())["token_type"] == "Bearer"
    await assert_still_serving(client, error_logs, "plain_http")
