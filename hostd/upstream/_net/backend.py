"""httpcore's network layer on plain asyncio streams (private to :mod:`hostd.upstream._net`).

httpcore's default backend goes through anyio, which opens a cancel scope for every read and
write; with thousands of streams relaying at once that was the largest cost left in hostd's
profile. Here a read is a ``StreamReader.read`` and a timeout, when there is one, is an
``asyncio.timeout``. TLS is upgraded in place (``StreamWriter.start_tls``), keeping the host
name for SNI and certificate checks while the socket is connected to a checked address.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import typing
from collections.abc import Callable

import httpcore
import httpx

READ_LIMIT = 64 * 1024


def is_socket_readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once (data, or the end): how httpcore tells a pooled
    connection the server has closed from one that is still usable."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True  # gone: the next read returns the end
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class AsyncioStream(httpcore.AsyncNetworkStream):
    __slots__ = ("_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            if timeout is None:
                return await self._reader.read(max_bytes)
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout(f"no data for {timeout:g}s") from None
        except OSError as e:
            raise httpcore.ReadError(str(e) or type(e).__name__) from None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            if timeout is None:
                await self._writer.drain()
            else:
                async with asyncio.timeout(timeout):
                    await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not write for {timeout:g}s") from None
        except (OSError, RuntimeError) as e:  # RuntimeError: the transport is closing
            raise httpcore.WriteError(str(e) or type(e).__name__) from None

    def abort(self) -> None:
        """Drop the connection now, from synchronous code (the stream table's close)."""
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            # An aborted transport's socket is closed on a later loop turn, after every
            # callback already queued (with 10,000 producers being cancelled, about a second
            # later): shut it down now so the server sees the end at once. Through a socket
            # object that does not own the descriptor (uvloop's wrappers have no shutdown()).
            with contextlib.suppress(OSError, ValueError, TypeError):
                raw = socket.socket(sock.family, sock.type, fileno=sock.fileno())
                try:
                    raw.shutdown(socket.SHUT_RDWR)
                finally:
                    raw.detach()
        self._writer.transport.abort()

    async def aclose(self) -> None:
        transport = self._writer.transport
        if transport.is_closing():
            return
        # Asked before close(): a closed TLS transport no longer knows its buffer.
        stuck = transport.get_write_buffer_size() > 0  # the peer is not reading: do not wait for it
        transport.close()
        if stuck:
            transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout(f"TLS handshake took more than {timeout:g}s") from None
        except (OSError, ssl.SSLError) as e:
            await self.aclose()
            raise httpcore.ConnectError(str(e) or type(e).__name__) from None
        return self

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            return self._reader.at_eof() or is_socket_readable(self._writer.get_extra_info("socket"))
        return None


def upstream_aborter(response: httpx.Response) -> Callable[[], None] | None:
    """A function that drops ``response``'s connection at once, when it runs on this backend.

    Closing thousands of streams (a plugin disconnecting) then drops every upstream connection
    in one pass, before the producers' orderly shutdown through httpcore catches up.
    """
    network_stream = response.extensions.get("network_stream")
    if not isinstance(network_stream, AsyncioStream):
        return None

    def abort() -> None:
        # Once the response is closed its connection may be back in the pool, serving
        # another request: only a connection still carrying this body is ours to drop.
        if not response.is_closed:
            network_stream.abort()

    return abort


async def open_tcp(
    host: str, port: int, timeout: float | None, local_address: str | None, socket_options: typing.Any = None
) -> AsyncioStream:
    """Connect to ``host`` (for the egress backend, an address it has already checked)."""
    local = (local_address, 0) if local_address else None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, local_addr=local, limit=READ_LIMIT)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"connect to {host}:{port} took more than {timeout:g}s") from None
    except OSError as e:
        raise httpcore.ConnectError(str(e) or type(e).__name__) from None
    except UnicodeError:  # a label of 64+ characters, or an empty one (the idna codec)
        raise httpcore.ConnectError(f"lookup {host}: invalid host name") from None
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in socket_options or ():
            sock.setsockopt(*option)
    return AsyncioStream(reader, writer)


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """A network backend for httpcore pools: TCP on asyncio streams."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Any = None,
    ) -> httpcore.AsyncNetworkStream:
        return await open_tcp(host, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: typing.Any = None
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - hostd never dials Unix sockets over HTTP
        raise httpcore.ConnectError("unix sockets are not supported")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
