"""Issue 10, item by item: input that used to kill, stall or bloat hostd now gets a precise
answer, a bounded cost, and leaves neighbours alone. Each test is named after what broke."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import orjson
import pytest

from tests.support.hostd_proc import HostdProcess, start_hostd
from tests.support.raw import RawConn, hello_ok
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio


def config(tmp: Path, text: str) -> str:
    path = tmp / "hostd.toml"
    path.write_text(text)
    return str(path)


async def test_a_line_nested_5000_deep_is_a_parse_error_and_the_daemon_lives(hp: HostdProcess) -> None:
    assert hp.socket is not None
    async with await RawConn.open(hp.socket) as conn:
        await conn.send(b"[" * 5000 + b"\n")
        answer = await conn.line()
        assert answer["id"] is None and answer["error"]["code"] == -32700
        await conn.send(b"{" + b'"a":[' * 3000 + b"\n")
        assert (await conn.line())["error"]["code"] == -32700
        assert "result" in await conn.call("hostd.hello", {}, rid=1)
    await hello_ok(hp.socket)


async def test_deep_nesting_inside_params_is_a_parse_error_not_an_internal_error(hp: HostdProcess) -> None:
    assert hp.socket is not None
    deep = b"[" * 3000 + b"]" * 3000
    line = b'{"jsonrpc":"2.0","id":5,"method":"host.log","params":{"fields":{"x":' + deep + b"}}}\n"
    async with await RawConn.open(hp.socket) as conn:
        await conn.send(line)
        answer = await conn.line()
        assert answer["error"]["code"] == -32700, answer
        await conn.send(b"[" + b",".join([line.rstrip(b"\n")] * 3) + b"]\n")
        batch = await conn.line()
        assert (
            batch["error"]["code"] == -32700
            if isinstance(batch, dict)
            else all(a["error"]["code"] == -32700 for a in batch)
        )
        assert "result" in await conn.call("hostd.hello", {}, rid=1)


async def test_an_answer_without_id_is_never_answered(hp: HostdProcess) -> None:
    assert hp.socket is not None
    async with await RawConn.open(hp.socket) as conn:
        await conn.send(b'{"jsonrpc":"2.0","result":{}}\n{"jsonrpc":"2.0","error":{"code":1,"message":"x"}}\n')
        await conn.send(b'{"jsonrpc":"2.0","id":"hostd-99","result":{}}\n')
        # The sentinel's answer is the first thing that comes back.
        assert (await conn.call("hostd.hello", {}, rid="sentinel"))["result"]["server"] == "hostd"


async def test_a_batch_over_max_batch_is_one_error_and_nothing_runs(hp: HostdProcess) -> None:
    assert hp.socket is not None
    async with await RawConn.open(hp.socket) as conn:
        await conn.send(b"[" + b",".join([b"1"] * 5000) + b"]\n")
        answer = await conn.line()
        assert answer == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": -32600,
                "message": "batch too large (max 1024 elements)",
                "data": {"code": "invalid_request"},
            },
        }
        await conn.send(b"[" + b",".join([b"1"] * 1024) + b"]\n")
        answers = await conn.line()
        assert len(answers) == 1024 and {a["error"]["code"] for a in answers} == {-32600}
        assert "result" in await conn.call("hostd.hello", {}, rid=1)


async def test_a_line_of_exactly_max_line_bytes_then_crlf_is_served(short_tmp: Path) -> None:
    hp = await start_hostd(short_tmp, "--max-line-bytes", "1024")
    try:
        assert hp.socket is not None
        head = b'{"jsonrpc":"2.0","id":1,"method":"host.log","params":{"message":"'
        tail = b'"}}'
        exact = head + b"x" * (1024 - len(head) - len(tail)) + tail
        assert len(exact) == 1024
        async with await RawConn.open(hp.socket) as conn:
            await conn.send(exact + b"\r\n")
            assert (await conn.line())["result"] == {}
            over = head + b"x" * (1025 - len(head) - len(tail)) + tail
            await conn.send(over + b"\r\n")
            assert (await conn.line())["error"]["message"] == "message too large"
    finally:
        await hp.stop()


async def test_a_request_over_max_line_bytes_that_looks_like_an_answer_is_still_too_large(short_tmp: Path) -> None:
    hp = await start_hostd(short_tmp, "--max-line-bytes", "1024")
    try:
        assert hp.socket is not None
        async with await RawConn.open(hp.socket) as conn:
            sneaky = (
                b'{"result":1,"jsonrpc":"2.0","id":1,"method":"host.log","params":{"message":"' + b"x" * 4000 + b'"}}'
            )
            await conn.send(sneaky + b"\n")
            answer = await conn.line()
            assert answer["error"]["message"] == "message too large"
            assert answer["id"] is None
            assert "result" in await conn.call("hostd.hello", {}, rid=2)
    finally:
        await hp.stop()


async def test_connections_over_max_sessions_are_closed_unanswered(short_tmp: Path) -> None:
    hp = await start_hostd(short_tmp, "--config", config(short_tmp, "[limits]\nmax_sessions = 2\n"))
    try:
        assert hp.socket is not None
        a = await RawConn.open(hp.socket)
        b = await RawConn.open(hp.socket)
        assert "result" in await a.call("hostd.hello", {}, rid=1)
        assert "result" in await b.call("hostd.hello", {}, rid=1)
        c = await RawConn.open(hp.socket)
        with pytest.raises((EOFError, ConnectionError)):  # closed unanswered: the send may fail too
            await c.send(b'{"jsonrpc":"2.0","id":1,"method":"hostd.hello"}\n')
            await c.line()
        await c.close()
        await hp.wait_log("too many sessions")
        assert "result" in await a.call("hostd.hello", {}, rid=2)
        await a.close()
        await b.close()
    finally:
        await hp.stop()


async def test_a_plugin_that_never_reads_its_answers_is_closed_alone(short_tmp: Path, upstream: Upstream) -> None:
    body = b"z" * (256 * 1024)

    @upstream.route("/big")
    async def big(_: Request) -> Response:
        return Response(200, body=body)

    hp = await start_hostd(short_tmp, "--config", config(short_tmp, "[limits]\nmax_output_bytes = 1048576\n"))
    try:
        assert hp.socket is not None
        hog = await RawConn.open(hp.socket)
        request = {"jsonrpc": "2.0", "method": "host.http.do", "params": {"url": upstream.url + "/big"}}
        for i in range(80):
            hog.writer.write(orjson.dumps({**request, "id": i}) + b"\n")
        await hog.writer.drain()
        await hp.wait_log("peer is not reading its answers")
        await hello_ok(hp.socket)
        hog.writer.close()
    finally:
        assert await hp.stop() == 0


async def test_the_session_holding_the_longest_partial_line_is_closed_past_the_input_budget(
    short_tmp: Path,
) -> None:
    cfg = "[limits]\nmax_line_bytes = 8388608\nmax_total_input_bytes = 1048576\n"
    hp = await start_hostd(short_tmp, "--config", config(short_tmp, cfg))
    try:
        assert hp.socket is not None
        big = await RawConn.open(hp.socket)
        small = await RawConn.open(hp.socket)
        await big.send(b'{"x":"' + b"a" * 700_000)
        await small.call("hostd.hello", {}, rid=0)  # the big partial has been read by now
        await small.send(b'{"x":"' + b"b" * 400_000)
        line = await hp.wait_log("closing the session holding the longest")
        with pytest.raises((EOFError, ConnectionError)):
            await big.line()
        await small.send(b'"}\n')
        assert (await small.line())["error"]["code"] == -32600  # a complete, served line
        assert '"held_bytes":7' in line
        await small.close()
        await big.close()
    finally:
        await hp.stop()


async def test_a_stream_opened_while_its_session_ends_does_not_leak_or_block_shutdown(
    short_tmp: Path, upstream: Upstream
) -> None:
    """Item 3: headers, no body, and a half-close right after the request."""
    release = asyncio.Event()
    upstream.hold("/quiet", [], release, [])
    hp = await start_hostd(short_tmp, control=True)
    try:
        assert hp.socket is not None and hp.control is not None
        for i in range(5):
            conn = await RawConn.open(hp.socket)
            await conn.send_json(
                {"jsonrpc": "2.0", "id": i, "method": "host.http.do_stream", "params": {"url": upstream.url + "/quiet"}}
            )
            conn.writer.write_eof()
            answer = await conn.line()
            assert answer["id"] == i
            await conn.close()
        await hp.wait_log_count('"session closed"', 5)
        async with await RawConn.open(hp.control) as ctl:
            status = (await ctl.call("hostd.status", {}, rid=1))["result"]
        assert status["sessions"] == []
        assert status["totals"]["streams_opened"] == status["totals"]["streams_closed"]
    finally:
        release.set()
        assert await hp.stop(signal.SIGTERM, timeout=15) == 0


async def test_a_call_still_running_when_the_shutdown_grace_ends_is_answered_shutting_down(
    short_tmp: Path, upstream: Upstream
) -> None:
    """Issue 12 item 6: the answer comes before the session closes, retryable."""
    release = asyncio.Event()

    @upstream.route("/hold")
    async def hold(_: Request) -> Response:
        await release.wait()  # no headers until released
        return Response(200, body=b"late")

    hp = await start_hostd(short_tmp, "--shutdown-grace", "0.3")
    try:
        assert hp.socket is not None
        async with await RawConn.open(hp.socket) as conn:
            request = {"jsonrpc": "2.0", "id": 3, "method": "host.http.do", "params": {"url": upstream.url + "/hold"}}
            await conn.send_json(request)
            await upstream.wait_for(lambda: upstream.open_connections == 1)  # the call is waiting for headers
            hp.proc.send_signal(signal.SIGTERM)
            answer = await conn.line()
            assert answer["id"] == 3
            assert answer["error"]["code"] == -32000
            assert answer["error"]["message"] == "hostd shutting down"
            assert answer["error"]["data"] == {"code": "host_call_failed", "retryable": True}
        async with asyncio.timeout(15):
            assert await hp.proc.wait() == 0
    finally:
        release.set()
        await hp.stop()
