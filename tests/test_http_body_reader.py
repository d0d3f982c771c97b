"""hostd's own HTTP/1.1 body reader for streams (``hostd/upstream/_net/h1body.py``) against
httpx's path it replaces: the same bytes, pieces of at most 32 KiB, the same end and the
same error text, for every framing, from real servers on 127.0.0.1; then through a real
hostd's ``host.http.do_stream``.

Each server answer sends its headers (and what ``before`` holds), then waits until the test
has the response in hand (``release``), so the body is read by the reader under test and
not already complete with the headers (such a body stays with httpx, see the module).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hostd.streams import PIECE_BYTES, End, PieceBuffer
from hostd.upstream._net import (
    NETWORK_ERRORS,
    AsyncioBackend,
    Gunzip,
    PooledTransport,
    client_ssl_context,
    close_response,
    pieces,
    take_over,
)
from hostd.upstream.http_client import describe
from tests.support.helpers import b64, read_to_end, self_signed_certificate
from tests.support.hostd_proc import HostdProcess

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend(pytestconfig: pytest.Config) -> Any:
    """The in-process reader runs on the loop of the run, as hostd's does."""
    return ("asyncio", {"use_uvloop": pytestconfig.getoption("--loop") == "uvloop"})


class RawUpstream:
    """Answers every request with ``before``, then (once released) each of ``after``, then
    ends: ``close`` (FIN), ``reset`` (RST) or ``hold`` (the connection stays open for the
    next request until the client hangs up)."""

    def __init__(
        self, before: bytes, after: list[bytes], end: str = "close", tls: ssl.SSLContext | None = None
    ) -> None:
        self.tls = tls
        self.before = before
        self.after = after
        self.end = end
        self.gates: asyncio.Queue[asyncio.Event] = asyncio.Queue()
        self.hung_up = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0  # accepted so far
        self.url = ""

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        scheme = "https://localhost" if self.tls else "http://127.0.0.1"
        self.url = f"{scheme}:{self._server.sockets[0].getsockname()[1]}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def release(self) -> None:
        (await asyncio.wait_for(self.gates.get(), 5)).set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self._answer(reader, writer)
        except (asyncio.CancelledError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                self.hung_up.set()  # "hold": the client hung up
                return
            gate = asyncio.Event()
            writer.write(self.before)
            await writer.drain()
            self.gates.put_nowait(gate)
            await gate.wait()
            for part in self.after:
                writer.write(part)
                await writer.drain()
            if self.end != "hold":
                break  # "hold": the next request on this connection, or the client hanging up
        if self.end == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


Outcome = tuple[list[bytes], str]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = PooledTransport(ssl_context=client_ssl_context(), network_backend=AsyncioBackend())
    async with httpx.AsyncClient(transport=transport) as c:
        yield c


async def via_httpx(client: httpx.AsyncClient, up: RawUpstream, gunzip: bool) -> Outcome:
    """What hostd's streams did before: httpx's raw body through ``pieces``."""
    response = await client.send(client.build_request("GET", up.url), stream=True)
    await up.release()
    got: list[bytes] = []
    error = ""
    try:
        async for piece in pieces(response, Gunzip() if gunzip else None):
            got.append(piece)
    except NETWORK_ERRORS as e:
        error = describe(e)
    finally:
        await close_response(response)
    return got, error


async def via_h1body(client: httpx.AsyncClient, up: RawUpstream, gunzip: bool) -> Outcome:
    response = await client.send(client.build_request("GET", up.url), stream=True)
    body = take_over(response, gunzip)
    assert body is not None, "the body was left to httpx"
    assert response.is_closed  # httpx and httpcore are done with it
    await up.release()
    buffer: PieceBuffer[bytes] = PieceBuffer(1_000_000)
    error = ""
    try:
        await body.pump(buffer)
    except NETWORK_ERRORS as e:
        error = describe(e)
    finally:
        body.close()
    buffer.finish()
    got: list[bytes] = []
    while not isinstance(item := await buffer.get(), End):
        got.append(item)
    return got, error


async def both(client: httpx.AsyncClient, up: RawUpstream, gunzip: bool = False) -> tuple[bytes, str]:
    """Both readers on the same answer: equal bytes and end, every piece 1..32 KiB."""
    old = await via_httpx(client, up, gunzip)
    new = await via_h1body(client, up, gunzip)
    for got, _ in (old, new):
        assert all(0 < len(p) <= PIECE_BYTES for p in got), [len(p) for p in got]
    assert b"".join(new[0]) == b"".join(old[0])
    assert new[1] == old[1]
    return b"".join(new[0]), new[1]


DATA = os.urandom(200_000)


def head(*headers: str) -> bytes:
    return ("HTTP/1.1 200 OK\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_content_length_body(client: httpx.AsyncClient) -> None:
    async with RawUpstream(head(f"Content-Length: {len(DATA)}") + DATA[:10], [DATA[10:]]) as up:
        assert await both(client, up) == (DATA, "")


async def test_content_length_bytes_past_the_length_are_not_body(client: httpx.AsyncClient) -> None:
    async with RawUpstream(head("Content-Length: 5"), [b"hello, and more"]) as up:
        assert await both(client, up) == (b"hello", "")


async def test_content_length_cut_short(client: httpx.AsyncClient) -> None:
    async with RawUpstream(head("Content-Length: 100"), [b"only-ten!!"]) as up:
        assert await both(client, up) == (
            b"only-ten!!",
            "peer closed connection without sending complete message body (received 10 bytes, expected 100)",
        )


async def test_chunked_body(client: httpx.AsyncClient) -> None:
    parts = [chunk(DATA[:7]), chunk(DATA[7:150_000]) + chunk(DATA[150_000:]), b"0\r\n\r\n"]
    async with RawUpstream(head("Transfer-Encoding: chunked") + chunk(b"x"), parts) as up:
        assert await both(client, up) == (b"x" + DATA, "")


async def test_chunked_body_with_trailers(client: httpx.AsyncClient) -> None:
    parts = [chunk(b"hello "), chunk(b"world"), b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"]
    async with RawUpstream(head("Transfer-Encoding: chunked"), parts, end="hold") as up:
        assert await both(client, up) == (b"hello world", "")


async def test_chunked_body_with_a_malformed_trailer(client: httpx.AsyncClient) -> None:
    parts = [chunk(b"hello"), b"0\r\nnot a header\r\n\r\n"]
    async with RawUpstream(head("Transfer-Encoding: chunked"), parts) as up:
        data, error = await both(client, up)
        assert (data, error) == (b"hello", "illegal header line: bytearray(b'not a header')")


async def test_chunked_body_cut_short(client: httpx.AsyncClient) -> None:
    async with RawUpstream(head("Transfer-Encoding: chunked"), [chunk(b"hello"), b"5\r\nwo"]) as up:
        assert await both(client, up) == (
            b"hellowo",
            "peer closed connection without sending complete message body (incomplete chunked read)",
        )


async def test_chunked_body_cut_inside_a_chunk_header(client: httpx.AsyncClient) -> None:
    async with RawUpstream(head("Transfer-Encoding: chunked"), [chunk(b"hello") + b"1"]) as up:
        assert await both(client, up) == (b"hello", "peer unexpectedly closed connection")


async def test_chunked_body_with_an_illegal_chunk_header(client: httpx.AsyncClient) -> None:
    async with RawUpstream(head("Transfer-Encoding: chunked"), [chunk(b"hello"), b"zz\r\n"]) as up:
        assert await both(client, up) == (b"hello", "illegal chunk header: bytearray(b'zz\\r\\n')")


async def test_chunked_body_with_a_chunk_header_too_long(client: httpx.AsyncClient) -> None:
    async with RawUpstream(head("Transfer-Encoding: chunked"), [b"5;" + b"x" * 110_000]) as up:
        assert await both(client, up) == (b"", "Receive buffer too long")


async def test_body_until_the_connection_closes(client: httpx.AsyncClient) -> None:
    async with RawUpstream(head("X-Framing: none") + DATA[:100], [DATA[100:]]) as up:
        assert await both(client, up) == (DATA, "")


async def test_gzip_body_is_decoded(client: httpx.AsyncClient) -> None:
    packed = gzip.compress(DATA * 3)
    framing = f"Content-Length: {len(packed)}"
    async with RawUpstream(head(framing, "Content-Encoding: gzip") + packed[:50], [packed[50:]]) as up:
        assert await both(client, up, gunzip=True) == (DATA * 3, "")


async def test_gzip_body_cut_inside_its_member(client: httpx.AsyncClient) -> None:
    packed = gzip.compress(DATA)[:-100]
    async with RawUpstream(head("Content-Encoding: gzip"), [packed]) as up:  # until close
        data, error = await both(client, up, gunzip=True)
        assert error == "unexpected EOF"
        assert DATA.startswith(data) and data


async def test_connection_reset_mid_body(client: httpx.AsyncClient) -> None:
    async with RawUpstream(head(f"Content-Length: {len(DATA)}"), [DATA[:1000]], end="reset") as up:
        data, error = await both(client, up)
        assert DATA.startswith(data)
        assert error  # the socket's own error text (its errno's), the same on both paths


async def stays_with_httpx(client: httpx.AsyncClient, up: RawUpstream, body: bytes) -> None:
    """``take_over`` declines the response, which httpx then reads to ``body`` as usual."""
    response = await client.send(client.build_request("GET", up.url), stream=True)
    assert take_over(response, False) is None
    assert not response.is_closed
    await up.release()
    assert await response.aread() == body
    await response.aclose()


async def test_a_body_complete_with_its_headers_stays_with_httpx(client: httpx.AsyncClient) -> None:
    """Its connection goes back to the pool (a taken connection is never reused)."""
    async with RawUpstream(head("Content-Length: 5") + b"hello", [], end="hold") as up:
        await stays_with_httpx(client, up, b"hello")


async def test_unexpected_httpcore_internals_leave_the_body_with_httpx(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer httpcore or h11 whose private names differ: no takeover, nothing changed, and
    the body is read through httpx as before (not an internal error)."""
    from hostd.upstream._net import h1body

    def renamed(_response: httpx.Response) -> object:
        raise AttributeError("'AsyncHTTP11Connection' object has no attribute '_h11_state'")

    monkeypatch.setattr(h1body, "_http11_stream", renamed)
    async with RawUpstream(head("Transfer-Encoding: chunked") + chunk(b"first"), [b"0\r\n\r\n"], end="hold") as up:
        await stays_with_httpx(client, up, b"first")


async def test_abort_drops_the_connection_at_once(client: httpx.AsyncClient) -> None:
    async with RawUpstream(head("Transfer-Encoding: chunked") + chunk(b"first"), [], end="hold") as up:
        response = await client.send(client.build_request("GET", up.url), stream=True)
        body = take_over(response, False)
        assert body is not None
        await up.release()
        buffer: PieceBuffer[bytes] = PieceBuffer(4)
        pump = asyncio.ensure_future(body.pump(buffer))
        assert await asyncio.wait_for(buffer.get(), 5) == b"first"
        body.abort()
        pump.cancel()
        await asyncio.wait_for(up.hung_up.wait(), 5)
        with pytest.raises(asyncio.CancelledError):
            await pump


async def test_a_forward_proxied_body(client: httpx.AsyncClient) -> None:
    parts = [chunk(DATA[:1000]), chunk(DATA[1000:]), b"0\r\n\r\n"]
    async with RawUpstream(head("Transfer-Encoding: chunked"), parts, end="hold") as proxy:
        transport = PooledTransport(
            ssl_context=client_ssl_context(), network_backend=AsyncioBackend(), proxy=httpx.Proxy(proxy.url)
        )
        async with httpx.AsyncClient(transport=transport) as proxied:
            proxy.url = "http://upstream.invalid/"  # what the proxy is asked for; it answers itself
            assert await both(proxied, proxy) == (DATA, "")


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    cert, key = self_signed_certificate(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, cert


async def test_a_body_over_tls(tls_pair: tuple[ssl.SSLContext, Path]) -> None:
    server, cert = tls_pair
    parts = [chunk(DATA[:1000]), chunk(DATA[1000:]), b"0\r\n\r\n"]
    transport = PooledTransport(ssl_context=client_ssl_context(str(cert)), network_backend=AsyncioBackend())
    async with httpx.AsyncClient(transport=transport) as tls_client:
        async with RawUpstream(head("Transfer-Encoding: chunked"), parts, tls=server) as up:
            assert await both(tls_client, up) == (DATA, "")
        async with RawUpstream(head("Content-Length: 100"), [b"only-ten!!"], tls=server) as up:
            data, error = await both(tls_client, up)
            assert data == b"only-ten!!" and error


# Through a real hostd -------------------------------------------------------------------


async def test_do_stream_reads_a_chunked_body_with_trailers(hostd: HostdProcess) -> None:
    parts = [chunk(DATA[:70_000]), chunk(DATA[70_000:]), b"0\r\nX-Checksum: abc\r\n\r\n"]
    async with (
        RawUpstream(head("Transfer-Encoding: chunked", "X-Kind: sse"), parts, end="hold") as up,
        await hostd.connect() as c,
    ):
        opened = await c.call("host.http.do_stream", {"url": up.url}, timeout=5)
        assert opened["status_code"] == 200
        assert opened["headers"]["X-Kind"] == ["sse"]
        assert "Transfer-Encoding" not in opened["headers"]
        await up.release()
        data, last = await read_to_end(c, "host.http.stream_read", opened["stream_id"])
        assert (data, last) == (DATA, {"done": True})


async def test_do_stream_truncated_body_ends_with_the_network_stacks_text(hostd: HostdProcess) -> None:
    async with (
        RawUpstream(head("Content-Length: 100"), [b"only-ten!!"]) as up,
        await hostd.connect() as c,
    ):
        sid = (await c.call("host.http.do_stream", {"url": up.url}, timeout=5))["stream_id"]
        await up.release()
        data, last = await read_to_end(c, "host.http.stream_read", sid)
        assert data == b"only-ten!!"
        assert last == {
            "done": True,
            "error": "peer closed connection without sending complete message body (received 10 bytes, expected 100)",
        }


async def test_do_stream_decodes_the_gzip_it_asked_for(hostd: HostdProcess) -> None:
    packed = gzip.compress(DATA)
    framing = f"Content-Length: {len(packed)}"
    async with (
        RawUpstream(head(framing, "Content-Encoding: gzip") + packed[:10], [packed[10:]]) as up,
        await hostd.connect() as c,
    ):
        opened = await c.call("host.http.do_stream", {"url": up.url}, timeout=5)
        assert "Content-Encoding" not in opened.get("headers", {})
        await up.release()
        data, last = await read_to_end(c, "host.http.stream_read", opened["stream_id"])
        assert (data, last) == (DATA, {"done": True})


async def test_stream_close_mid_body_hangs_up_on_the_upstream(hostd: HostdProcess) -> None:
    async with (
        RawUpstream(head("Transfer-Encoding: chunked") + chunk(b"first"), [], end="hold") as up,
        await hostd.connect() as c,
    ):
        sid = (await c.call("host.http.do_stream", {"url": up.url}, timeout=5))["stream_id"]
        await up.release()
        assert (await c.call("host.http.stream_read", {"stream_id": sid}, timeout=5))["payload"]
        assert await c.call("host.http.stream_close", {"stream_id": sid}, timeout=5) == {}
        await asyncio.wait_for(up.hung_up.wait(), 5)


async def test_closing_a_finished_stream_leaves_a_newer_connection_alone(hostd: HostdProcess) -> None:
    """A taken connection closed at its body's end (``Connection: close``) frees its descriptor,
    which the next connection may get: a late ``stream_close`` of the finished stream must not
    cut that one."""
    framing = head("Transfer-Encoding: chunked", "Connection: close")
    async with (
        RawUpstream(framing, [chunk(b"done"), b"0\r\n\r\n"], end="hold") as first,
        RawUpstream(head("Transfer-Encoding: chunked") + chunk(b"first"), [b"0\r\n\r\n"], end="hold") as second,
        await hostd.connect() as c,
    ):
        a = (await c.call("host.http.do_stream", {"url": first.url}, timeout=5))["stream_id"]
        await first.release()
        assert await c.call("host.http.stream_read", {"stream_id": a}, timeout=5) == {"payload": b64(b"done")}
        await asyncio.wait_for(first.hung_up.wait(), 5)  # hostd closed A's connection at its end
        b = (await c.call("host.http.do_stream", {"url": second.url}, timeout=5))["stream_id"]
        assert await c.call("host.http.stream_close", {"stream_id": a}, timeout=5) == {}
        assert await c.call("host.http.stream_read", {"stream_id": b}, timeout=5) == {"payload": b64(b"first")}
        await second.release()
        assert await c.call("host.http.stream_read", {"stream_id": b}, timeout=5) == {"done": True}


async def test_a_body_read_to_its_end_gives_its_connection_back_and_a_late_close_leaves_it(
    hostd: HostdProcess,
) -> None:
    """As httpx would have: the next stream to the same server reuses the connection, and
    closing the finished stream afterwards does not cut the one now reusing it."""
    async with (
        RawUpstream(head("Transfer-Encoding: chunked"), [chunk(b"done") + b"0\r\n\r\n"], end="hold") as up,
        await hostd.connect() as c,
    ):
        a = (await c.call("host.http.do_stream", {"url": up.url}, timeout=5))["stream_id"]
        await up.release()
        # A's producer read the whole body (and gave the connection back) before this answer.
        assert await c.call("host.http.stream_read", {"stream_id": a}, timeout=5) == {"payload": b64(b"done")}
        await c.call("host.log", timeout=5)
        b = (await c.call("host.http.do_stream", {"url": up.url}, timeout=5))["stream_id"]
        assert up.connections == 1  # B's request went over A's connection
        assert await c.call("host.http.stream_close", {"stream_id": a}, timeout=5) == {}
        await up.release()
        assert await c.call("host.http.stream_read", {"stream_id": b}, timeout=5) == {"payload": b64(b"done")}
        assert await c.call("host.http.stream_read", {"stream_id": b}, timeout=5) == {"done": True}


async def test_a_body_with_bytes_after_it_closes_its_connection(client: httpx.AsyncClient) -> None:
    async with RawUpstream(head("Content-Length: 5"), [b"hello, and more"], end="hold") as up:
        # (httpx's own reader would pool it with the extra bytes waiting: not compared here)
        assert await via_h1body(client, up, False) == ([b"hello"], "")
        await asyncio.wait_for(up.hung_up.wait(), 5)  # the taken connection was not pooled
