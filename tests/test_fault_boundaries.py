"""Each fault boundary of PROTOCOL §4 holds on a real daemon: the fault stays where it
started and a neighbour session keeps answering. Faults are injected with the test-only
``HOSTD_TEST_FAULTS`` hook; the suite runs on asyncio and on uvloop (``--loop``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.hostd_proc import HostdProcess, start_hostd
from tests.support.raw import RawConn, hello_ok
from tests.support.upstream import Upstream

pytestmark = pytest.mark.anyio


async def faulty_hostd(tmp: Path, faults: str, *args: str) -> HostdProcess:
    return await start_hostd(tmp, *args, control=True, env={"HOSTD_TEST_FAULTS": faults})


@pytest.fixture
async def handler_fault(short_tmp: Path) -> AsyncIterator[HostdProcess]:
    hp = await faulty_hostd(short_tmp, "handler:host.log,handler:host.http.stream_read")
    try:
        yield hp
    finally:
        await hp.stop()


async def test_a_handler_that_raises_answers_internal_error_and_the_session_goes_on(
    handler_fault: HostdProcess,
) -> None:
    assert handler_fault.socket is not None
    async with await RawConn.open(handler_fault.socket) as conn:
        answer = await conn.call("host.log", {"message": "boom"}, rid=1)
        assert answer["error"]["code"] == -32603
        assert answer["error"]["message"] == "internal error in host.log"
        assert answer["error"]["data"]["code"] == "internal_error"
        # The same session keeps serving, and so does a neighbour.
        assert (await conn.call("hostd.hello", {}, rid=2))["result"]["server"] == "hostd"
        await hello_ok(handler_fault.socket)
    line = await handler_fault.wait_log('"handler failed"')
    assert "InjectedFault" in line and "traceback" in line


async def test_an_async_handler_that_raises_answers_internal_error(handler_fault: HostdProcess) -> None:
    assert handler_fault.socket is not None
    async with await RawConn.open(handler_fault.socket) as conn:
        answer = await conn.call("host.http.stream_read", {"stream_id": "x"}, rid=7)
        assert answer["error"]["code"] == -32603
        assert answer["error"]["message"] == "internal error in host.http.stream_read"
        await hello_ok(handler_fault.socket)


async def test_a_stream_producer_that_raises_ends_its_stream_with_internal_error(
    short_tmp: Path, upstream: Upstream
) -> None:
    release = asyncio.Event()
    upstream.hold("/hold", [b"a"], release, [b"b"])
    hp = await faulty_hostd(short_tmp, "producer:http")
    try:
        assert hp.socket is not None
        async with await RawConn.open(hp.socket) as conn:
            opened = await conn.call("host.http.do_stream", {"url": upstream.url + "/hold"}, rid=1)
            sid = opened["result"]["stream_id"]
            read = await conn.call("host.http.stream_read", {"stream_id": sid}, rid=2)
            assert read["result"] == {"error": "internal error", "done": True}
            await hello_ok(hp.socket)
        await hp.wait_log('"task failed"')
    finally:
        release.set()
        await hp.stop()


async def test_a_session_whose_own_code_raises_ends_alone_and_is_counted(short_tmp: Path) -> None:
    hp = await faulty_hostd(short_tmp, "session:plugin")
    try:
        assert hp.socket is not None
        conn = await RawConn.open(hp.socket)
        # The session's own lifetime code raises as soon as it runs: that session alone ends.
        with pytest.raises((EOFError, ConnectionError)):
            await conn.call("hostd.hello", {}, rid=1)
        await conn.close()
        await hp.wait_log('"session crashed"')
        ctl = await RawConn.open(hp.control or "")
        status = await ctl.call("hostd.status", {}, rid=1)
        assert status["result"]["totals"]["session_crashes"] >= 1
        await ctl.close()
    finally:
        assert await hp.stop() == 0


async def test_a_cleanup_callback_that_raises_does_not_stop_the_others(short_tmp: Path, upstream: Upstream) -> None:
    release = asyncio.Event()
    upstream.hold("/hold", [b"a"], release, [b"b"])
    hp = await faulty_hostd(short_tmp, "callback:session_end")
    try:
        assert hp.socket is not None and hp.control is not None
        conn = await RawConn.open(hp.socket)
        await conn.call("host.http.do_stream", {"url": upstream.url + "/hold"}, rid=1)
        await conn.close()
        await hp.wait_log('"cleanup callback failed"')
        async with await RawConn.open(hp.control) as ctl:
            status = (await ctl.call("hostd.status", {}, rid=1))["result"]
        assert status["sessions"] == [] or all(s["streams"]["http"] == 0 for s in status["sessions"])
        assert status["totals"]["streams_closed"] == status["totals"]["streams_opened"] == 1
        await hello_ok(hp.socket)
    finally:
        release.set()
        await hp.stop()


async def test_the_reaper_crashing_is_restarted_and_sessions_are_untouched(short_tmp: Path) -> None:
    hp = await faulty_hostd(short_tmp, "reaper", "--stream-idle-timeout", "0.2")
    try:
        assert hp.socket is not None
        async with await RawConn.open(hp.socket) as conn:
            assert "result" in await conn.call("hostd.hello", {"plugin_id": "survivor"}, rid=1)
            await hp.wait_log('"daemon component crashed; restarting it"')
            # The same connection, opened before the crash, still answers.
            assert "result" in await conn.call("host.log", {"message": "still here"}, rid=2)
    finally:
        assert await hp.stop() == 0


async def test_faults_off_by_default_the_hook_is_inert(hp: HostdProcess) -> None:
    assert hp.socket is not None
    async with await RawConn.open(hp.socket) as conn:
        assert (await conn.call("host.log", {"message": "fine"}, rid=1))["result"] == {}
