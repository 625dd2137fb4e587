"""HTTP-level behaviour of the vault server on aiohttp's public API: ``Expect`` handling and the
logger handed to aiohttp, which keeps unparseable requests (the client's fault) at debug."""

from __future__ import annotations

import logging

from aiohttp import HttpVersion11, web

__all__ = ["HTTP_LOG", "expect_continue"]


async def expect_continue(request: web.Request) -> None:
    """Answer ``Expect: 100-continue`` (as aiohttp's documentation does it); ignore any other
    value (RFC 9110 allows it) so the request gets a normal answer, where aiohttp's default
    handler would send a text/plain 417."""
    expect = request.headers.get("Expect", "")
    continues = request.version == HttpVersion11 and expect.lower() == "100-continue"
    if continues and request.transport is not None:
        request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")


class _ClientFaultsAtDebug(logging.Filter):
    """aiohttp logs a request it cannot parse (over-long header, bad framing or encoding, a body
    cut short) as an error with a traceback; it is the client's fault, so debug here. aiohttp
    answers those itself (see :data:`HTTP_LOG`); anything else stays an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        code = getattr(exc, "code", None)  # aiohttp's HTTP parse errors carry their status
        client_fault = isinstance(exc, web.RequestPayloadError | ConnectionError) or (
            isinstance(code, int) and 400 <= code < 500
        )
        if record.levelno >= logging.ERROR and client_fault:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


# The logger handed to aiohttp (``AppRunner(logger=...)``, public API). A request aiohttp cannot
# parse gets aiohttp's own answer, not Azure's shape: ``400 Bad Request``, ``text/plain``, body
# ``400, message: <reason>``, connection closed; never a 5xx, and the server keeps serving.
HTTP_LOG = logging.getLogger("kvconfig.emulator.http")
HTTP_LOG.addFilter(_ClientFaultsAtDebug())
