"""hostd's own HTTP/1.1 body reader for ``host.http.do_stream`` (private to :mod:`hostd.upstream`).

A stream held open through httpx keeps, for its whole life, httpx's request and response,
httpcore's connection with h11's state and two locks, its pool's request with an event,
and ten generator frames per suspended read: ~6 KiB of the ~18 KiB a held stream cost.
Once the response headers have arrived through httpx (the request, redirects, proxies, TLS
and the egress checks all stay httpx's), :func:`take_over` takes the connection's socket
(:class:`AsyncioStream`) out of httpcore, leaving a stand-in whose close does nothing,
closes the response the ordinary way (httpcore then forgets the connection and its pool the
request), and reads the body itself, framed as h11 decided from the headers:

- ``Content-Length``: the delivered chunks as they came, the last one cut at the length;
- chunked (with trailers): h11's own chunk reader over a receive buffer of its own;
- until the connection closes (an HTTP/1.0-style body).

A body that arrived whole with its headers is left to httpx. A taken connection whose body
ended with nothing after it goes back to its pool (``transport.give_back``), as httpcore
would have put it; any other is closed.

The network reads (64 KiB at most), the pieces (at most 32 KiB, gzip decoded through
:class:`Gunzip` when hostd asked for it) and every error text are those of the httpx path
(``tests/test_http_body_reader.py`` checks both against each other). Anything else (no
:class:`AsyncioStream`, a response h11 would not frame as a body) is left to httpx.

Fault containment: a malformed or truncated body raises the network stack's exceptions
(``httpcore.RemoteProtocolError``, ``httpcore.ReadError``) to the stream's producer, which
ends that stream with their text; its connection is closed or dropped, not pooled again.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import h11
import httpcore
import httpx
from h11._readers import ChunkedReader, ContentLengthReader, Http10Reader
from h11._receivebuffer import ReceiveBuffer

from hostd.streams import PIECE_BYTES, PieceBuffer
from hostd.upstream._net.backend import AsyncioStream
from hostd.upstream._net.body import Gunzip, settle_close
from hostd.upstream._net.transport import _Body, give_back

READ_BYTES = 64 * 1024  # httpcore's READ_NUM_BYTES: the same reads, hence the same pieces
MAX_INCOMPLETE = 100 * 1024  # httpcore's MAX_INCOMPLETE_EVENT_SIZE for h11
_SEARCH_DEPTH = 6  # httpx's bound stream, hostd's _Body, httpcore's pool stream, its HTTP/1.1 stream

CONTENT_LENGTH = 0
CHUNKED = 1
UNTIL_CLOSE = 2


class _Detached(httpcore.AsyncNetworkStream):
    """Left in httpcore's connection in place of the socket hostd took: closing it does nothing."""

    async def aclose(self) -> None:
        return None

    def get_extra_info(self, info: str) -> Any:
        return None


_DETACHED = _Detached()


class H1Body:
    """One response body read straight from its connection (see the module docstring)."""

    __slots__ = (
        "_buf",
        "_closing",
        "_ended",
        "_gunzip",
        "_head",
        "_home",
        "_kept",
        "_length",
        "_mode",
        "_net",
        "_reader",
        "_remaining",
    )

    def __init__(self, net: AsyncioStream, mode: int, length: int, head: bytes, gunzip: bool) -> None:
        self._net = net
        # (pool, origin, keep-alive expiry): where the connection goes back once the body has
        # ended with nothing after it, as httpcore would have put it; None: closed at the end.
        self._home: tuple[Any, Any, float | None] | None = None
        self._ended = False  # read to its end
        self._kept = False  # back in the pool: no longer this stream's to drop
        self._mode = mode
        self._length = length
        self._remaining = length
        self._head = head  # body bytes h11 had received with the headers
        self._gunzip = Gunzip() if gunzip else None
        self._reader: ChunkedReader | None = ChunkedReader() if mode == CHUNKED else None
        self._buf: ReceiveBuffer | None = ReceiveBuffer() if mode == CHUNKED else None
        # httpx's close, when it suspended on something other than a loop turn (never seen).
        self._closing: tuple[Coroutine[Any, Any, None], Any] | None = None

    def abort(self) -> None:
        """Drop the connection now (the stream table's close, from synchronous code), unless
        it is back in the pool, where it may be carrying another stream's request."""
        if not self._kept:
            self._net.abort()

    def close(self) -> None:
        """The body is over, or failed: its connection back to the pool when it can carry
        another request, else closed."""
        home, self._home = self._home, None
        net = self._net
        if home is not None and self._ended and net.idle() and not self._buf and give_back(*home, net):
            self._kept = True
            return
        net.close()

    async def aclose(self) -> None:
        """:meth:`close`, awaitable as a body read through httpx closes."""
        self.close()

    async def pump(self, buffer: PieceBuffer[bytes]) -> None:
        """Put the body into ``buffer`` in pieces; returns at its end, raises on a failure."""
        if self._closing is not None:
            closing, self._closing = self._closing, None
            await settle_close(*closing)
        net = self._net
        mode = self._mode
        data, self._head = self._head, b""
        while mode != CONTENT_LENGTH or self._remaining:
            if not data:
                taken = net.take(READ_BYTES)
                if taken is None:
                    await net.readable()
                    continue
                data = taken
            if mode == CHUNKED:
                if await self._chunked(data, buffer):
                    break
            elif not data:  # the end of the connection
                if mode == CONTENT_LENGTH:
                    raise httpcore.RemoteProtocolError(
                        "peer closed connection without sending complete message body "
                        f"(received {self._length - self._remaining} bytes, expected {self._length})"
                    )
                break
            else:
                if mode == CONTENT_LENGTH:
                    if len(data) > self._remaining:
                        self._home = None  # bytes past the body: the connection is not reusable
                        data = data[: self._remaining]
                    self._remaining -= len(data)
                if self._gunzip is None and len(data) <= PIECE_BYTES:
                    await buffer.put(data)
                else:
                    await self._put(data, buffer)
            data = b""
        if self._gunzip is not None:
            self._gunzip.finish()
        self._ended = True

    async def _put(self, data: bytes, buffer: PieceBuffer[bytes]) -> None:
        if self._gunzip is not None:
            for piece in self._gunzip.feed(data):
                await buffer.put(piece)
            return
        view = memoryview(data)
        for i in range(0, len(data), PIECE_BYTES):
            await buffer.put(bytes(view[i : i + PIECE_BYTES]))

    async def _chunked(self, data: bytes, buffer: PieceBuffer[bytes]) -> bool:
        """Feed ``data`` (``b""``: the end of the connection) to h11's chunk reader, as h11's
        ``Connection.next_event`` does; True once the body (and its trailers) is complete."""
        reader = self._reader
        buf = self._buf
        assert reader is not None and buf is not None
        if data:
            buf += data
        while True:
            try:
                event = reader(buf)
                if event is None and not data and not buf:
                    reader.read_eof()  # raises: the body is incomplete
            except h11.ProtocolError as e:  # h11 re-raises a LocalProtocolError as a remote one
                raise httpcore.RemoteProtocolError(str(e)) from None
            if event is None:
                if len(buf) > MAX_INCOMPLETE:
                    raise httpcore.RemoteProtocolError("Receive buffer too long")
                if not data:
                    raise httpcore.RemoteProtocolError("peer unexpectedly closed connection")
                return False
            if isinstance(event, h11.EndOfMessage):
                return True
            piece = bytes(event.data)
            if self._gunzip is None and len(piece) <= PIECE_BYTES:
                await buffer.put(piece)
            else:
                await self._put(piece, buffer)


def _http11_stream(response: httpx.Response) -> tuple[Any, Any]:
    """httpcore's HTTP/1.1 body stream under httpx's and hostd's wrappers, or ``None``, and
    the pool of the shard it came from."""
    from httpcore._async.http11 import HTTP11ConnectionByteStream

    stream: Any = response.stream
    pool = None
    for _ in range(_SEARCH_DEPTH):
        if isinstance(stream, HTTP11ConnectionByteStream):
            return stream, pool
        if isinstance(stream, _Body) and stream._shard is not None:
            pool = stream._shard.pool
        stream = getattr(stream, "_stream", None) or getattr(stream, "_inner", None)
        if stream is None:
            break
    return None, None


def take_over(response: httpx.Response, gunzip: bool) -> H1Body | None:
    """The body of ``response`` as an :class:`H1Body`, with httpx and httpcore done with it
    (``response`` is closed), or ``None``, ``response`` untouched, to read it through httpx
    (also when httpcore's or h11's private structure is not the one this was written for:
    every private name is read before anything is changed)."""
    try:
        found = _inspect(response)
    except AttributeError:
        return None
    if found is None:
        return None
    stream, connection, mode, length, head, home = found
    connection._network_stream = _DETACHED
    body = H1Body(stream, mode, length, head, gunzip)
    body._home = home
    body._closing = _close_inline(response)
    return body


def _inspect(response: httpx.Response) -> tuple[AsyncioStream, Any, int, int, bytes, Any] | None:
    """What :func:`take_over` needs of httpcore's connection and h11's state, or None."""
    net = response.extensions.get("network_stream")
    if not isinstance(net, AsyncioStream) or response.is_closed or response.is_stream_consumed:
        return None
    stream: AsyncioStream = net
    if response.extensions.get("http_version") not in (b"HTTP/1.1", b"HTTP/1.0"):
        return None
    inner, pool = _http11_stream(response)
    connection = getattr(inner, "_connection", None)
    if connection is None or getattr(connection, "_network_stream", None) is not net:
        return None
    state = getattr(connection, "_h11_state", None)
    if not isinstance(state, h11.Connection) or state.our_state is not h11.DONE:
        return None
    if state.their_state is not h11.SEND_BODY:
        return None
    reader = getattr(state, "_reader", None)
    length = 0
    if type(reader) is ContentLengthReader:
        mode = CONTENT_LENGTH
        length = reader._remaining
        if length != reader._length:
            return None
    elif type(reader) is ChunkedReader:
        mode = CHUNKED
        if reader._bytes_in_chunk or reader._bytes_to_discard or reader._reading_trailer:
            return None
    elif type(reader) is Http10Reader:
        mode = UNTIL_CLOSE
    else:
        return None
    head, _closed = state.trailing_data  # the end, if seen, is also the socket's: take() returns it
    if _complete(mode, length, head):
        return None  # httpx reads it at once, and pools the connection again
    home = None
    if mode != UNTIL_CLOSE and state._cstate.keep_alive and pool is not None:
        home = (pool, connection._origin, connection._keepalive_expiry)
    return stream, connection, mode, length, head, home


def _complete(mode: int, length: int, head: bytes) -> bool:
    """Whether the whole body (probably, for chunked) came with the headers."""
    if mode == CONTENT_LENGTH:
        return len(head) >= length
    if mode == CHUNKED:
        return head == b"0\r\n\r\n" or head.endswith(b"\r\n0\r\n\r\n")
    return False


def _close_inline(response: httpx.Response) -> tuple[Coroutine[Any, Any, None], Any] | None:
    """Close ``response`` now, its connection detached: httpcore drops the connection and
    its pool forgets the request. Its only suspension (anyio's lock yielding one loop turn)
    is stepped over inline; what is left if it waits on anything else, for the producer."""
    closing = response.aclose()
    for _ in range(64):
        try:
            waiting_on = closing.send(None)
        except StopIteration:
            return None
        except Exception:
            return None  # the close failed: nothing of the connection is left to httpcore
        if waiting_on is not None:
            return closing, waiting_on
    return closing, None
