"""Slow and stuck peers (issue 10, PROTOCOL §4 and §11): a plugin that does not read, one
that stops mid-line, one that floods ``host.log``, one that sends ten times
``max_in_flight`` at once, and SIGTERM while all of that goes on. Each costs its own session
at most; neighbours keep being served; shutdown stays bounded and answers what is left."""

from __future__ import annotations

import asyncio
import base64
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from tests.support.hostd_proc import HostdProcess, start_hostd
from tests.support.raw import RawConn, hello_ok
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def config(tmp: Path, text: str) -> str:
    path = tmp / "hostd.toml"
    path.write_text(text)
    return str(path)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Re-check ``check`` (each check is a round trip to hostd) until it holds."""
    async with asyncio.timeout(timeout):
        while not await check():
            pass


def transport(conn: RawConn) -> asyncio.Transport:
    """The connection's transport, to stop and resume reading (a peer that does not read)."""
    return cast(asyncio.Transport, conn.writer.transport)


def request(rid: Any, method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        message["params"] = params
    return orjson.dumps(message) + b"\n"


async def test_a_reader_that_stops_fills_the_daemon_wide_output_budget_and_others_wait_for_it(
    short_tmp: Path, upstream: Upstream
) -> None:
    """``max_total_output_bytes``: while one peer's unread answers fill it, new calls from
    every session are refused -32001 (retryable); once that peer reads, calls succeed."""
    body = b"z" * (256 * 1024)

    @upstream.route("/big")
    async def big(_: Request) -> Response:
        return Response(200, body=body)

    cfg = "[limits]\nmax_output_bytes = 268435456\nmax_total_output_bytes = 2097152\n"
    hp = await start_hostd(short_tmp, "--config", config(short_tmp, cfg), control=True)
    try:
        assert hp.socket is not None
        hog = await RawConn.open(hp.socket)
        transport(hog).pause_reading()  # the hog reads nothing for now
        count = 40  # 40 answers of ~350 KB: about 7 times the budget
        hog.writer.write(b"".join(request(i, "host.http.do", {"url": upstream.url + "/big"}) for i in range(count)))
        await hog.writer.drain()
        other = await RawConn.open(hp.socket)
        refused: dict[str, Any] = {}
        rid = 0

        async def refused_now() -> bool:
            nonlocal rid, refused
            rid += 1
            answer = await other.call("host.http.stream_read", {"stream_id": "none"}, rid=rid)
            refused = answer["error"]
            return bool(refused["code"] == -32001)

        await until(refused_now)
        assert refused["data"] == {"code": "limit_exceeded", "retryable": True}, refused
        assert "output" in refused["message"], refused
        # Inline methods still answer: the session is not stuck, only refusing new work.
        assert (await other.call("hostd.hello", {}, rid="hello"))["result"]["server"] == "hostd"
        # The hog drains: every one of its answers arrives, whole.
        transport(hog).resume_reading()
        answers = [await hog.line(timeout=30) for _ in range(count)]
        done = [a for a in answers if "result" in a]
        assert done and all(base64.b64decode(a["result"]["Body"]) == body for a in done)
        assert all(a["error"]["code"] == -32001 for a in answers if "error" in a)

        async def served_now() -> bool:
            nonlocal rid
            rid += 1
            answer = await other.call("host.http.stream_read", {"stream_id": "none"}, rid=rid)
            return bool(answer["error"]["code"] == -32000)

        await until(served_now)
        assert (await other.call("host.http.do", {"url": upstream.url + "/big"}, rid="after"))["result"]
        await hog.close()
        await other.close()
    finally:
        assert await hp.stop() == 0


async def test_a_half_line_that_stalls_costs_only_its_own_session(hp: HostdProcess) -> None:
    assert hp.socket is not None
    stalled = await RawConn.open(hp.socket)
    await stalled.send(b'{"jsonrpc":"2.0","id":"half","method":"host.log","params":{"message":"wait')
    for _ in range(20):
        await hello_ok(hp.socket)
    async with await RawConn.open(hp.socket) as other:
        assert (await other.call("host.log", {"message": "other"}, rid=1))["result"] == {}
    await stalled.send(b' for it"}}\n')
    assert (await stalled.line())["id"] == "half"
    await stalled.close()


async def test_a_host_log_flood_is_rate_limited_and_counted(short_tmp: Path) -> None:
    """PROTOCOL §11: at most ``plugin_lines_per_s`` (1000) per session, bursts of 2000; the
    rest is dropped and counted in ``totals.dropped_log_lines``."""
    hp = await start_hostd(short_tmp, control=True)
    try:
        assert hp.socket is not None and hp.control is not None
        sent = 6000
        marker = "flood-line"
        async with await RawConn.open(hp.socket) as flood:
            line = orjson.dumps(
                {"jsonrpc": "2.0", "method": "host.log", "params": {"level": "info", "message": marker}}
            )
            await flood.send((line + b"\n") * sent)
            assert (await flood.call("hostd.hello", {}, rid="after"))["result"]["server"] == "hostd"
        await hello_ok(hp.socket)
        async with await RawConn.open(hp.control) as ctl:
            status = (await ctl.call("hostd.status", {}, rid=1))["result"]
        dropped = status["totals"]["dropped_log_lines"]
        written = await hp.wait_log_count(marker, sent - dropped) if dropped < sent else []
        assert 0 < dropped < sent, f"{dropped} of {sent} plugin log lines dropped"
        assert len(written) == sent - dropped
        await hp.wait_log("dropped")  # and said so
    finally:
        assert await hp.stop() == 0


async def test_ten_times_max_in_flight_at_once_gets_clear_limit_errors_and_others_are_served(
    short_tmp: Path, upstream: Upstream
) -> None:
    release = asyncio.Event()

    @upstream.route("/slow")
    async def slow(_: Request) -> Response:
        await release.wait()
        return Response(200, body=b"done")

    limit = 8
    hp = await start_hostd(short_tmp, "--max-in-flight", str(limit))
    try:
        assert hp.socket is not None
        busy = await RawConn.open(hp.socket)
        total = 10 * limit
        await busy.send(b"".join(request(i, "host.http.do", {"url": upstream.url + "/slow"}) for i in range(total)))
        refused = [await busy.line() for _ in range(total - limit)]
        assert sorted(a["id"] for a in refused) == list(range(limit, total))
        for answer in refused:
            assert answer["error"] == {
                "code": -32001,
                "message": f"too many in-flight calls (max {limit})",
                "data": {"code": "limit_exceeded"},
            }, answer
        await upstream.wait_for(lambda: len(upstream.requests) == limit)
        # Neighbours are served meanwhile, with their own in-flight budget.
        async with await RawConn.open(hp.socket) as other:
            assert (await other.call("host.log", {"message": "still served"}, rid="n"))["result"] == {}
            answer = await other.call("host.http.stream_read", {"stream_id": "x"}, rid="r")
            assert answer["error"]["code"] == -32000
        release.set()
        done = [await busy.line() for _ in range(limit)]
        assert sorted(a["id"] for a in done) == list(range(limit))
        assert all(base64.b64decode(a["result"]["Body"]) == b"done" for a in done)
        await busy.close()
    finally:
        release.set()
        assert await hp.stop() == 0


async def test_sigterm_during_all_of_it_exits_0_and_answers_what_still_runs(
    short_tmp: Path, upstream: Upstream
) -> None:
    """A peer that does not read, a half line, a log flood, calls over the limit and calls
    blocked upstream, then SIGTERM: hostd exits 0 within its grace period (plus a margin for
    this shared machine) and the blocked calls are answered ``hostd shutting down``."""
    never = asyncio.Event()
    body = b"y" * (256 * 1024)

    @upstream.route("/slow")
    async def slow(_: Request) -> Response:
        await never.wait()
        return Response(200, body=b"late")

    @upstream.route("/big")
    async def big(_: Request) -> Response:
        return Response(200, body=body)

    grace = 1.0
    limit = 8
    hp = await start_hostd(
        short_tmp, "--shutdown-grace", str(grace), "--max-in-flight", str(limit), "--max-line-bytes", str(MiB)
    )
    try:
        assert hp.socket is not None
        hog = await RawConn.open(hp.socket)
        transport(hog).pause_reading()
        hog.writer.write(b"".join(request(i, "host.http.do", {"url": upstream.url + "/big"}) for i in range(8)))
        await hog.writer.drain()
        half = await RawConn.open(hp.socket)
        await half.send(b'{"jsonrpc":"2.0","id":1,"method":"host.log","params":{"message":"' + b"h" * 4096)
        flood = await RawConn.open(hp.socket)
        log = orjson.dumps({"jsonrpc": "2.0", "method": "host.log", "params": {"message": "flood"}}) + b"\n"
        await flood.send(log * 3000)
        busy = await RawConn.open(hp.socket)
        total = 10 * limit
        await busy.send(b"".join(request(i, "host.http.do", {"url": upstream.url + "/slow"}) for i in range(total)))
        refused = [await busy.line() for _ in range(total - limit)]
        assert all(a["error"]["code"] == -32001 for a in refused)
        await upstream.wait_for(lambda: sum(r.path == "/slow" for r in upstream.requests) == limit)
        await hello_ok(hp.socket)

        hp.proc.send_signal(signal.SIGTERM)
        shutting = [await busy.line(timeout=grace + 15) for _ in range(limit)]
        assert sorted(a["id"] for a in shutting) == list(range(limit))
        for answer in shutting:
            assert answer["error"]["code"] == -32000, answer
            assert answer["error"]["message"] == "hostd shutting down", answer
            assert answer["error"]["data"]["retryable"] is True, answer
        assert await hp.stop(timeout=grace + 15) == 0
        await hp.wait_log("hostd stopped")
        for conn in (hog, half, flood, busy):
            await conn.close()
    finally:
        never.set()
        if hp.proc.returncode is None:
            await hp.stop(signal.SIGKILL)
