"""An HTTPS (CONNECT) proxy on loopback that sends ``NAME.vault.azure.net`` to the emulator.

With ``HTTPS_PROXY`` pointing here, unmodified code that builds
``https://{KEY_VAULT_NAME}.vault.azure.net`` reaches vault ``NAME`` of the emulator: a
``CONNECT NAME.vault.azure.net:443`` is spliced to that vault's own listening socket, whose
certificate (issued by the emulator's CA) also names ``*.vault.azure.net``. TLS runs end to end
between the client and the vault server; the proxy only copies bytes. Every other ``CONNECT``
is tunnelled to the host asked for, untouched (no upstream proxy is used). Plain-HTTP proxy
requests (absolute-form ``GET http://...``) are refused with 405: the emulator exports only
``HTTPS_PROXY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable

__all__ = ["VAULT_HOST", "ConnectProxy"]

# A Key Vault name: 3-24 letters, digits and hyphens (checked loosely; the vault checks nothing).
VAULT_HOST = re.compile(r"^([0-9a-z][0-9a-z-]{1,62})\.vault\.azure\.net$")
_HEAD_LIMIT = 16 * 1024
_CHUNK = 64 * 1024

# host, port -> the local address to splice to, or None to tunnel to the host itself.
Route = Callable[[str, int], Awaitable[tuple[str, int] | None]]


class ConnectProxy:
    """The CONNECT proxy. ``start()`` listens; ``aclose()`` stops it and drops every tunnel."""

    def __init__(self, route: Route) -> None:
        self._route = route
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def __repr__(self) -> str:
        return f"ConnectProxy(port={self.port})"

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._accept, host, port, reuse_address=True, limit=_HEAD_LIMIT
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop listening and cancel every open tunnel. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or parts[0] != "CONNECT":
            await _answer(writer, 405, "this proxy only tunnels HTTPS (CONNECT host:port)")
            return
        host, sep, port_text = parts[1].rpartition(":")
        host = host.strip("[]").lower()
        if not sep or not port_text.isdigit() or not host:
            await _answer(writer, 400, "CONNECT needs host:port")
            return
        port = int(port_text)
        target = await self._route(host, port)
        try:
            up_reader, up_writer = await asyncio.open_connection(*(target or (host, port)))
        except OSError as exc:
            await _answer(writer, 502, f"cannot reach {host}:{port}: {exc.strerror or exc}")
            return
        try:
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await _splice(reader, writer, up_reader, up_writer)
        finally:
            up_writer.transport.abort()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(_CHUNK):
            dst.write(chunk)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        pass


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until both directions have ended (or either side fails)."""
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    reason = {400: "Bad Request", 405: "Method Not Allowed", 502: "Bad Gateway"}[status]
    body = f"kvconfig emulator proxy: {message}\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()
