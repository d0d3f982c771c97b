"""httpcore's network layer on a plain asyncio protocol (private to :mod:`hostd.upstream._net`).

httpcore's default backend goes through anyio, which opens a cancel scope for every read and
write; with thousands of streams relaying at once that was the largest cost left in hostd's
profile. Here a read takes what the transport delivered (waiting on one future when nothing
has arrived) and a timeout, when there is one, is an ``asyncio.timeout``. TLS is upgraded in
place (``loop.start_tls``), keeping the host name for SNI and certificate checks while the
socket is connected to a checked address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import ssl
import sys
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


class AsyncioStream(httpcore.AsyncNetworkStream, asyncio.Protocol):
    """One upstream connection: its own asyncio protocol and httpcore's stream in one object.

    Not ``StreamReader``/``StreamWriter``: those cost ~3 KiB per connection (a reader, a
    protocol, a writer, a deque and a future each) and copy every byte twice (into the
    reader's buffer, then out of it). Here what the transport delivers is kept as it came
    and a read returns a delivered chunk whole when it fits, else a slice of it.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._offset = 0  # bytes of _chunks[0] already returned
        self._buffered = 0  # bytes delivered and not yet returned
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._paused = False  # reading paused: READ_LIMIT bytes are waiting
        self._tls = False
        self._waiter: asyncio.Future[None] | None = None  # a read waiting for data
        self._drain: asyncio.Future[None] | None = None  # a write waiting for the transport

    # asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > READ_LIMIT and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return not self._tls  # plain TCP stays half-open, as with asyncio's streams

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._error = exc
        self._wake_reader()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _wake_reader(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # httpcore.AsyncNetworkStream ---------------------------------------------------------

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if not self._chunks and not self._eof:
            try:
                if timeout is None:
                    await self._wait_data()
                else:
                    async with asyncio.timeout(timeout):
                        await self._wait_data()
            except TimeoutError:
                raise httpcore.ReadTimeout(f"no data for {timeout:g}s") from None
        if not self._chunks:
            if self._error is not None:
                raise httpcore.ReadError(str(self._error) or type(self._error).__name__)
            return b""
        return self._take(max_bytes)

    def take(self, max_bytes: int) -> bytes | None:
        """What :meth:`read` would return now, or ``None`` when it would have to wait."""
        if self._chunks:
            return self._take(max_bytes)
        if not self._eof:
            return None
        if self._error is not None:
            raise httpcore.ReadError(str(self._error) or type(self._error).__name__)
        return b""

    def idle(self) -> bool:
        """Open, with nothing received that was not read: fit to carry another request."""
        transport = self._transport
        return not (self._chunks or self._eof or transport is None or transport.is_closing())

    def readable(self) -> asyncio.Future[None]:
        """A future that is done once data or the end arrives: awaited as it is, so a
        suspended read costs no frame of its own (hostd's body reader, ``h1body.py``)."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter

    async def _wait_data(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _take(self, max_bytes: int) -> bytes:
        chunk = self._chunks[0]
        offset = self._offset
        left = len(chunk) - offset
        if left <= max_bytes:
            del self._chunks[0]
            self._offset = 0
            data = chunk if offset == 0 else chunk[offset:]
        else:
            data = chunk[offset : offset + max_bytes]
            self._offset = offset + max_bytes
        self._buffered -= len(data)
        if self._paused and self._buffered <= READ_LIMIT // 2 and self._transport is not None and not self._lost:
            self._paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        transport = self._transport
        if self._lost or transport is None or transport.is_closing():
            raise httpcore.WriteError("connection lost")
        try:
            transport.write(buffer)
        except (OSError, RuntimeError) as e:  # RuntimeError: the transport is closing
            raise httpcore.WriteError(str(e) or type(e).__name__) from None
        drain = self._drain
        if drain is None:
            return
        try:
            if timeout is None:
                await asyncio.shield(drain)
            else:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(drain)
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not write for {timeout:g}s") from None
        if self._lost:
            raise httpcore.WriteError(str(self._error) if self._error else "connection lost")

    def abort(self) -> None:
        """Drop the connection now, from synchronous code (the stream table's close)."""
        transport = self._transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
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
        transport.abort()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Close in an orderly way (from synchronous code); dropped when the peer is not reading."""
        transport = self._transport
        if transport is None or transport.is_closing():
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
        transport = self._transport
        assert transport is not None
        try:
            async with asyncio.timeout(timeout):
                tls = await asyncio.get_running_loop().start_tls(
                    transport, self, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout(f"TLS handshake took more than {timeout:g}s") from None
        except (OSError, ssl.SSLError) as e:
            await self.aclose()
            raise httpcore.ConnectError(str(e) or type(e).__name__) from None
        if tls is None:  # the connection was lost during the handshake
            raise httpcore.ConnectError("connection lost during the TLS handshake")
        self._transport = tls
        self._tls = True
        return self

    def get_extra_info(self, info: str) -> typing.Any:
        transport = self._transport
        if transport is None:
            return None
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        if info == "is_readable":
            return bool(self._chunks) or self._eof or is_socket_readable(transport.get_extra_info("socket"))
        return None


class DeferredCAContext(ssl.SSLContext):
    """A client TLS context that loads its CA certificates on its first handshake, not when built.

    Loading certifi's bundle costs ~28 ms; a hostd whose calls only reach plain-HTTP
    upstreams (the proxy's model API on loopback) never pays it. Every handshake, on asyncio
    and on uvloop, starts with ``wrap_bio``.
    """

    _ca_locations: tuple[str | None, str | None] | None = None

    def wrap_bio(self, *args: typing.Any, **kwargs: typing.Any) -> ssl.SSLObject:
        self.load_cas()
        return super().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: typing.Any, **kwargs: typing.Any) -> ssl.SSLSocket:
        self.load_cas()
        return super().wrap_socket(*args, **kwargs)

    def load_cas(self) -> None:
        locations, self._ca_locations = self._ca_locations, None
        if locations is not None:
            self.load_verify_locations(cafile=locations[0], capath=locations[1])


def client_ssl_context(cafile: str | None = None) -> ssl.SSLContext:
    """``ssl.create_default_context(cafile=cafile)``, or without one what ``httpx.create_ssl_context()``
    builds (``$SSL_CERT_FILE``, ``$SSL_CERT_DIR``, else certifi's bundle), CAs loaded on first use."""
    capath = None
    if not cafile:
        if os.environ.get("SSL_CERT_FILE"):
            cafile = os.environ["SSL_CERT_FILE"]
        elif os.environ.get("SSL_CERT_DIR"):
            capath = os.environ["SSL_CERT_DIR"]
        else:
            import certifi  # httpx's own dependency

            cafile = certifi.where()
    context = DeferredCAContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname, as the default
    context._ca_locations = (cafile, capath)
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog and not sys.flags.ignore_environment:
        context.keylog_filename = keylog
    return context


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
    stream = AsyncioStream()
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await asyncio.get_running_loop().create_connection(
                lambda: stream, host, port, local_addr=local
            )
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"connect to {host}:{port} took more than {timeout:g}s") from None
    except OSError as e:
        raise httpcore.ConnectError(str(e) or type(e).__name__) from None
    except UnicodeError:  # a label of 64+ characters, or an empty one (the idna codec)
        raise httpcore.ConnectError(f"lookup {host}: invalid host name") from None
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in socket_options or ():
            sock.setsockopt(*option)
    return stream


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
