"""PROTOCOL.md §5: host.http.do, do_stream, stream_read and stream_close against real loopback servers."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hostd.client import RpcError
from tests.support.helpers import b64, read_to_end, unb64
from tests.support.hostd_proc import HostdProcess, running_hostd
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio


# host.http.do ------------------------------------------------------------------------


async def test_do_defaults_to_get_and_sends_headers_as_given(hostd: HostdProcess, upstream: Upstream) -> None:
    @upstream.route("/echo")
    async def echo(req: Request) -> Response:
        return Response(200, [("Content-Type", "text/plain")], b"ok")

    async with await hostd.connect() as c:
        result = await c.call(
            "host.http.do", {"url": upstream.url + "/echo", "headers": {"x-custom": ["a", "b"]}}, timeout=5
        )
    assert result == {"StatusCode": 200, "Headers": result["Headers"], "Body": b64(b"ok")}
    assert result["Headers"]["Content-Type"] == ["text/plain"]
    req = upstream.requests[-1]
    assert req.method == "GET"
    assert [v for k, v in req.headers if k == "x-custom"] == ["a", "b"]
    assert req.header("accept-encoding") == "gzip"


async def test_do_posts_the_body(hostd: HostdProcess, upstream: Upstream) -> None:
    @upstream.route("/p")
    async def p(req: Request) -> Response:
        return Response(201, body=req.body[::-1])

    async with await hostd.connect() as c:
        result = await c.call("host.http.do", {"method": "POST", "url": upstream.url + "/p", "body": b64(b"abc")})
    assert result["StatusCode"] == 201
    assert unb64(result["Body"]) == b"cba"
    assert upstream.requests[-1].body == b"abc"


async def test_do_nested_request_replaces_top_level_fields(hostd: HostdProcess, upstream: Upstream) -> None:
    @upstream.route("/nested")
    async def nested(req: Request) -> Response:
        return Response(200, body=req.method.encode())

    async with await hostd.connect() as c:
        result = await c.call(
            "host.http.do",
            {"url": upstream.url + "/ignored", "request": {"method": "PUT", "url": upstream.url + "/nested"}},
            timeout=5,
        )
    assert unb64(result["Body"]) == b"PUT"


async def test_do_non_2xx_is_a_result_and_header_names_are_canonical(hostd: HostdProcess, upstream: Upstream) -> None:
    @upstream.route("/denied")
    async def denied(_: Request) -> Response:
        return Response(401, [("www-authenticate", "Bearer"), ("x-api-key", "1"), ("x-api-key", "2")], b"")

    async with await hostd.connect() as c:
        result = await c.call("host.http.do", {"url": upstream.url + "/denied"}, timeout=5)
    assert result["StatusCode"] == 401
    assert result["Body"] == ""
    assert result["Headers"]["Www-Authenticate"] == ["Bearer"]
    assert result["Headers"]["X-Api-Key"] == ["1", "2"]


async def test_do_decodes_gzip_it_asked_for_and_drops_encoding_headers(hostd: HostdProcess, upstream: Upstream) -> None:
    payload = b"hello " * 1000

    @upstream.route("/gz")
    async def gz(_: Request) -> Response:
        return Response(200, [("Content-Encoding", "gzip")], gzip.compress(payload))

    async with await hostd.connect() as c:
        result = await c.call("host.http.do", {"url": upstream.url + "/gz"}, timeout=5)
        assert unb64(result["Body"]) == payload
        assert result["Headers"] is None  # Content-Encoding and Content-Length were all it had
        raw = await c.call(
            "host.http.do", {"url": upstream.url + "/gz", "headers": {"Accept-Encoding": ["gzip"]}}, timeout=5
        )
    assert unb64(raw["Body"]) == gzip.compress(payload)
    assert raw["Headers"]["Content-Encoding"] == ["gzip"]


async def test_do_follows_redirects(hostd: HostdProcess, upstream: Upstream) -> None:
    @upstream.route("/from")
    async def src(_: Request) -> Response:
        return Response(302, [("Location", "/to")])

    @upstream.route("/to")
    async def dst(_: Request) -> Response:
        return Response(200, body=b"arrived")

    @upstream.route("/loop")
    async def loop(_: Request) -> Response:
        return Response(302, [("Location", "/loop")])

    async with await hostd.connect() as c:
        result = await c.call("host.http.do", {"url": upstream.url + "/from"}, timeout=5)
        assert unb64(result["Body"]) == b"arrived"
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", {"url": upstream.url + "/loop"}, timeout=10)
    assert e.value.code == -32000
    assert e.value.message.startswith("execute host http request: ")


async def test_do_transport_failures_are_execute_errors(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", {"url": "http://127.0.0.1:1/"}, timeout=10)
        assert e.value.code == -32000
        assert e.value.message.startswith("execute host http request: ")
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", {"url": "ftp://127.0.0.1/x"}, timeout=5)
        assert e.value.message.startswith("execute host http request: ")


@pytest.mark.parametrize("params", [{"method": "BAD METHOD", "url": "http://127.0.0.1:1/"}, {"url": "http://[::1"}])
async def test_do_bad_method_or_url_is_a_create_error(hostd: HostdProcess, params: dict[str, Any]) -> None:
    async with await hostd.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", params, timeout=5)
    assert e.value.code == -32000
    assert e.value.message.startswith("create host http request: ")


async def test_do_total_timeout(short_tmp: Path, upstream: Upstream) -> None:
    never = asyncio.Event()

    @upstream.route("/never")
    async def slow(_: Request) -> Response:
        await never.wait()
        return Response(200)

    async with running_hostd(short_tmp, "--http-timeout", "0.3") as hp, await hp.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", {"url": upstream.url + "/never"}, timeout=10)
    assert e.value.message.startswith("execute host http request: ")
    assert "timeout" in e.value.message


async def test_do_body_over_max_body_bytes_is_limit_exceeded(short_tmp: Path, upstream: Upstream) -> None:
    @upstream.route("/big")
    async def big(_: Request) -> Response:
        return Response(200, body=b"x" * 5000)

    config = short_tmp / "hostd.toml"
    config.write_text("[http]\nmax_body_bytes = 4096\n")
    async with running_hostd(short_tmp, "--config", str(config)) as hp, await hp.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", {"url": upstream.url + "/big"}, timeout=5)
        assert e.value.code == -32001
        assert e.value.data == {"code": "limit_exceeded"}
        assert await c.call("host.log", timeout=5) == {}


# host.http.do_stream -----------------------------------------------------------------


async def test_do_stream_returns_at_headers_and_reads_to_done(hostd: HostdProcess, upstream: Upstream) -> None:
    body = bytes(range(256)) * 600  # 150 KiB: several pieces
    upstream.hold("/s", [body[:1000], body[1000:]])
    async with await hostd.connect() as c:
        opened = await c.call("host.http.do_stream", {"url": upstream.url + "/s"}, timeout=5)
        assert opened["status_code"] == 200
        assert opened["headers"]["X-Stream"] == ["yes"]
        assert len(opened["stream_id"]) == 32
        data, last = await read_to_end(c, "host.http.stream_read", opened["stream_id"])
        assert data == body
        assert last == {"done": True}
        with pytest.raises(RpcError) as e:
            await c.call("host.http.stream_read", {"stream_id": opened["stream_id"]}, timeout=5)
        assert e.value.message == f"http stream {opened['stream_id']} is not open"


async def test_stream_read_returns_what_is_available_without_waiting_to_fill(
    hostd: HostdProcess, upstream: Upstream
) -> None:
    release = asyncio.Event()
    upstream.hold("/trickle", [b"tiny"], release)
    async with await hostd.connect() as c:
        sid = (await c.call("host.http.do_stream", {"url": upstream.url + "/trickle"}, timeout=5))["stream_id"]
        assert await c.call("host.http.stream_read", {"stream_id": sid}, timeout=5) == {"payload": b64(b"tiny")}
        release.set()
        assert await c.call("host.http.stream_read", {"stream_id": sid}, timeout=5) == {"done": True}


async def test_stream_read_errors(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.http.stream_read", {"stream_id": ""}, timeout=5)
        assert (e.value.code, e.value.message) == (-32000, "http stream id is required")
        with pytest.raises(RpcError) as blank:  # ids are compared exactly: "  " is an unknown id
            await c.call("host.http.stream_read", {"stream_id": "  "}, timeout=5)
        assert (blank.value.code, blank.value.message) == (-32000, "http stream    is not open")
        with pytest.raises(RpcError) as e:
            await c.call("host.http.stream_read", {"stream_id": "nope"}, timeout=5)
        assert (e.value.code, e.value.message) == (-32000, "http stream nope is not open")
        assert await c.call("host.http.stream_close", {"stream_id": "nope"}, timeout=5) == {}
        assert await c.call("host.http.stream_close", {}, timeout=5) == {}


async def test_another_sessions_stream_is_not_open(hostd: HostdProcess, upstream: Upstream) -> None:
    release = asyncio.Event()
    upstream.hold("/mine", [b"secret"], release)
    async with await hostd.connect() as owner, await hostd.connect() as other:
        sid = (await owner.call("host.http.do_stream", {"url": upstream.url + "/mine"}, timeout=5))["stream_id"]
        with pytest.raises(RpcError) as e:
            await other.call("host.http.stream_read", {"stream_id": sid}, timeout=5)
        assert e.value.message == f"http stream {sid} is not open"
        assert await other.call("host.http.stream_close", {"stream_id": sid}, timeout=5) == {}
        # the owner's stream is untouched by the other session's close
        assert await owner.call("host.http.stream_read", {"stream_id": sid}, timeout=5) == {"payload": b64(b"secret")}
        release.set()


async def test_stream_close_drops_the_upstream_connection(hostd: HostdProcess, upstream: Upstream) -> None:
    release = asyncio.Event()
    upstream.hold("/held", [b"a"], release)
    async with await hostd.connect() as c:
        sid = (await c.call("host.http.do_stream", {"url": upstream.url + "/held"}, timeout=5))["stream_id"]
        await upstream.wait_for(lambda: upstream.open_connections == 1)
        assert await c.call("host.http.stream_close", {"stream_id": sid}, timeout=5) == {}
        await upstream.wait_for(lambda: upstream.open_connections == 0)
        assert await c.call("host.http.stream_close", {"stream_id": sid}, timeout=5) == {}  # idempotent
        with pytest.raises(RpcError):
            await c.call("host.http.stream_read", {"stream_id": sid}, timeout=5)


async def test_upstream_failure_mid_stream_is_an_error_then_gone(hostd: HostdProcess, upstream: Upstream) -> None:
    @upstream.route("/broken")
    async def broken(_: Request) -> Response:
        return Response(200, [("Content-Length", "100")], b"only-ten!!")  # hangs up 90 bytes short

    # Content-Length is sent twice by the helper otherwise; use a raw route instead.
    upstream.routes.pop("/broken")

    async def raw_broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-ten!!")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(raw_broken, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with await hostd.connect() as c:
            sid = (await c.call("host.http.do_stream", {"url": f"http://127.0.0.1:{port}/"}, timeout=5))["stream_id"]
            data, last = await read_to_end(c, "host.http.stream_read", sid)
            assert data == b"only-ten!!"
            assert last["done"] is True
            assert last["error"]
            with pytest.raises(RpcError):
                await c.call("host.http.stream_read", {"stream_id": sid}, timeout=5)
    finally:
        server.close()


async def test_slow_reader_holds_the_upstream_back(hostd: HostdProcess, upstream: Upstream) -> None:
    sent = 0
    chunk = b"z" * 65536

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(4096):  # 256 MiB if nobody pushed back
            sent += len(chunk)
            yield chunk

    @upstream.route("/endless")
    async def route(_: Request) -> Response:
        return Response(200, chunks=endless())

    async with await hostd.connect() as c:
        sid = (await c.call("host.http.do_stream", {"url": upstream.url + "/endless"}, timeout=5))["stream_id"]
        first = await c.call("host.http.stream_read", {"stream_id": sid}, timeout=5)
        assert first["payload"]
        # Let the upstream run until the pipe is full: many reads of ours would each free a piece.
        await c.call("host.log", timeout=5)
        await c.call("host.log", timeout=5)
        assert sent < 64 * 1024 * 1024, f"upstream pushed {sent} bytes with one piece read"
        await c.call("host.http.stream_close", {"stream_id": sid}, timeout=5)
    await upstream.wait_for(lambda: upstream.open_connections == 0)


async def test_disconnect_closes_every_stream_and_upstream_connection(hostd: HostdProcess, upstream: Upstream) -> None:
    release = asyncio.Event()
    upstream.hold("/held", [b"a"], release)
    c = await hostd.connect()
    count = 80  # more than one of the client's connection-pool shards
    opened = await asyncio.gather(
        *(c.call("host.http.do_stream", {"url": upstream.url + "/held"}, timeout=10) for _ in range(count))
    )
    assert len({o["stream_id"] for o in opened}) == count
    await upstream.wait_for(lambda: upstream.open_connections == count)
    await c.aclose()
    await upstream.wait_for(lambda: upstream.open_connections == 0)
    assert upstream.total_connections == count


async def test_max_streams_is_limit_exceeded(short_tmp: Path, upstream: Upstream) -> None:
    release = asyncio.Event()
    upstream.hold("/held", [b"a"], release)
    async with running_hostd(short_tmp, "--max-streams", "2") as hp, await hp.connect() as c:
        first = await c.call("host.http.do_stream", {"url": upstream.url + "/held"}, timeout=5)
        await c.call("host.http.do_stream", {"url": upstream.url + "/held"}, timeout=5)
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do_stream", {"url": upstream.url + "/held"}, timeout=5)
        assert e.value.code == -32001
        assert len(upstream.requests) == 2  # the third never reached the upstream
        await c.call("host.http.stream_close", {"stream_id": first["stream_id"]}, timeout=5)
        await c.call("host.http.do_stream", {"url": upstream.url + "/held"}, timeout=5)
        release.set()


async def test_idle_stream_is_reaped(short_tmp: Path, upstream: Upstream) -> None:
    release = asyncio.Event()
    upstream.hold("/held", [b"a"], release)
    async with running_hostd(short_tmp, "--stream-idle-timeout", "0.2") as hp, await hp.connect() as c:
        sid = (await c.call("host.http.do_stream", {"url": upstream.url + "/held"}, timeout=5))["stream_id"]
        await hp.wait_log("idle stream reaped")
        await upstream.wait_for(lambda: upstream.open_connections == 0)
        with pytest.raises(RpcError) as e:
            await c.call("host.http.stream_read", {"stream_id": sid}, timeout=5)
        assert e.value.message == f"http stream {sid} is not open"


async def test_a_pending_read_keeps_a_stream_from_being_reaped(short_tmp: Path, upstream: Upstream) -> None:
    release = asyncio.Event()
    upstream.hold("/held", [], release)
    # 1 s, not less: the first stream's read must reach hostd before the reaper looks at it,
    # and on a loaded machine a few hundred milliseconds can pass between two calls.
    async with running_hostd(short_tmp, "--stream-idle-timeout", "1") as hp, await hp.connect() as c:
        sid = (await c.call("host.http.do_stream", {"url": upstream.url + "/held"}, timeout=5))["stream_id"]
        reading = asyncio.ensure_future(c.call("host.http.stream_read", {"stream_id": sid}, timeout=10))
        # A second stream with no reader is reaped; its log line proves the reaper ran meanwhile.
        await c.call("host.http.do_stream", {"url": upstream.url + "/held"}, timeout=5)
        await hp.wait_log("idle stream reaped")
        assert not reading.done()
        release.set()
        assert await reading == {"done": True}


async def test_closing_a_finished_stream_leaves_its_pooled_connection_alone(
    hostd: HostdProcess, upstream: Upstream
) -> None:
    """Regression: closing stream A after its body was fully read aborted A's old connection,
    which the pool had already handed to stream B."""
    release = asyncio.Event()
    upstream.hold("/held", [b"first"], release)

    @upstream.route("/small")
    async def small(_: Request) -> Response:
        return Response(200, body=b"0123456789")

    async with await hostd.connect() as c:
        a = await c.call("host.http.do_stream", {"url": upstream.url + "/small"}, timeout=5)
        # A's producer took the whole body (and released the connection) before this answer.
        assert await c.call("host.http.stream_read", {"stream_id": a["stream_id"]}, timeout=5) == {
            "payload": b64(b"0123456789")
        }
        await c.call("host.log", timeout=5)
        b = await c.call("host.http.do_stream", {"url": upstream.url + "/held"}, timeout=5)
        assert upstream.total_connections == 1  # B reuses A's connection
        assert await c.call("host.http.stream_close", {"stream_id": a["stream_id"]}, timeout=5) == {}
        assert await c.call("host.http.stream_read", {"stream_id": b["stream_id"]}, timeout=5) == {
            "payload": b64(b"first")
        }
        release.set()
        assert await c.call("host.http.stream_read", {"stream_id": b["stream_id"]}, timeout=5) == {"done": True}


async def test_bodies_buffered_across_calls_are_bounded_by_max_total_body_bytes(
    short_tmp: Path, upstream: Upstream
) -> None:
    release = asyncio.Event()
    sent_first = asyncio.Event()
    halves = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal halves
        yield b"x" * 4000
        halves += 1
        if halves == 2:
            sent_first.set()
        await release.wait()
        yield b"y" * 1000

    @upstream.route("/half")
    async def half(_: Request) -> Response:
        return Response(200, chunks=body())

    config = short_tmp / "hostd.toml"
    config.write_text("[http]\nmax_body_bytes = 5000\nmax_total_body_bytes = 6000\n")
    async with running_hostd(short_tmp, "--config", str(config)) as hp, await hp.connect() as c:
        calls = [
            asyncio.ensure_future(c.call("host.http.do", {"url": upstream.url + "/half"}, timeout=10)) for _ in range(2)
        ]
        async with asyncio.timeout(10):
            await sent_first.wait()
            done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        refused = done.pop()
        with pytest.raises(RpcError) as e:
            await refused
        assert e.value.code == -32001
        assert "max_total_body_bytes" in e.value.message
        release.set()
        other = calls[1] if refused is calls[0] else calls[0]
        assert len(unb64((await other)["Body"])) == 5000
