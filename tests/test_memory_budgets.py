"""The daemon-wide byte budgets (PROTOCOL §11, docs/reliability.md "Worst-case memory"):
requests served by a task (``max_total_request_bytes``), emit chunks waiting for the host
(counted in ``max_total_output_bytes``) and ``host.http.do`` bodies held until their answer
has been written (``[http] max_total_body_bytes``). Each shows what ``hostd.status``
reports under ``buffered`` and that a neighbour is refused ``-32001`` (retryable) while the
budget is full, then served once it drains.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hostd.client import Client
from tests.support.helpers import T, read_emit_stream
from tests.support.hostd_proc import HostdProcess, start_hostd
from tests.support.plugins import plugin_process
from tests.support.raw import RawConn
from tests.support.upstream import Request, Response, Upstream
from tests.test_slow_peers import config, request, transport, until

pytestmark = pytest.mark.anyio


async def buffered(ctl: Client) -> dict[str, int]:
    status = await ctl.call("hostd.status", {}, timeout=T)
    result: dict[str, int] = status["buffered"]
    return result


def holds(ctl: Client, name: str, check: Callable[[int], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return check((await buffered(ctl))[name])

    return probe


async def test_requests_served_by_tasks_share_a_daemon_wide_budget(short_tmp: Path, upstream: Upstream) -> None:
    release = asyncio.Event()

    @upstream.route("/slow")
    async def slow(_: Request) -> Response:
        await release.wait()
        return Response(200, body=b"done")

    cfg = "[limits]\nmax_total_request_bytes = 300000\n"
    hp = await start_hostd(short_tmp, "--config", config(short_tmp, cfg), control=True)
    try:
        assert hp.socket is not None
        body = base64.b64encode(b"q" * 200_000).decode()
        post = {"method": "POST", "url": upstream.url + "/slow", "body": body}
        big, other = await RawConn.open(hp.socket), await RawConn.open(hp.socket)
        async with big, other, await hp.connect_control() as ctl:
            assert (await buffered(ctl))["request_bytes"] == 0
            big.writer.write(request(1, "host.http.do", post))
            await until(holds(ctl, "request_bytes", lambda n: n > 250_000))
            refused = await other.call("host.http.do", post)
            assert refused["error"]["code"] == -32001, refused
            assert refused["error"]["message"] == "hostd request buffers are full; retry later"
            assert refused["error"]["data"] == {"code": "limit_exceeded", "retryable": True}
            # Inline calls are never held: they still answer.
            assert (await other.call("hostd.hello", {}, rid="hello"))["result"]["server"] == "hostd"
            release.set()
            answer = await big.line(timeout=T)
            assert base64.b64decode(answer["result"]["Body"]) == b"done"
            await until(holds(ctl, "request_bytes", lambda n: n == 0))
            again = await other.call("host.http.do", post)
            assert base64.b64decode(again["result"]["Body"]) == b"done"
    finally:
        assert await hp.stop() == 0


async def test_emit_chunks_waiting_for_the_host_count_in_the_output_budget(hp: HostdProcess) -> None:
    prefix = "p" * 1000
    async with plugin_process(hp), await hp.connect_control() as ctl:
        answer = await ctl.call(
            "hostd.invoke",
            {"plugin_id": "scripted", "method": "t.stream", "params": {"count": 20, "prefix": prefix}, "stream": True},
            timeout=T,
        )
        stream_id = answer["stream_id"]
        blocked = await ctl.call(
            "hostd.invoke",
            {"plugin_id": "scripted", "method": "t.wait_blocked", "params": {"stream_id": stream_id, "n": 17}},
            timeout=T,
        )
        assert (blocked["result"]["sent"], blocked["result"]["answered"]) == (17, 16)
        queued = sum(len(f"{prefix}{i}") for i in range(16))
        assert (await buffered(ctl))["output_bytes"] >= queued
        reads = await read_emit_stream(ctl, stream_id)
        assert len([r for r in reads if r["payload"]]) == 20
        await until(holds(ctl, "output_bytes", lambda n: n == 0))


async def test_a_body_stays_counted_until_its_answer_is_written(short_tmp: Path, upstream: Upstream) -> None:
    """``[http] max_total_body_bytes`` counts a ``host.http.do`` body until the answer holding
    it has been written to the plugin, not just produced: a plugin that does not read holds
    the budget, and a neighbour's body that would pass it is refused until it reads."""
    body = b"b" * (3 * 1024 * 1024)

    @upstream.route("/big")
    async def big(_: Request) -> Response:
        return Response(200, body=body)

    cfg = "[http]\nmax_total_body_bytes = 5000000\n"
    hp = await start_hostd(short_tmp, "--config", config(short_tmp, cfg), control=True)
    try:
        assert hp.socket is not None
        hog, other = await RawConn.open(hp.socket), await RawConn.open(hp.socket)
        async with hog, other, await hp.connect_control() as ctl:
            transport(hog).pause_reading()  # its 4 MiB answer cannot all leave hostd
            hog.writer.write(request(1, "host.http.do", {"url": upstream.url + "/big"}))
            await until(holds(ctl, "output_bytes", lambda n: n > 0))  # the answer waits in hostd
            assert (await buffered(ctl))["body_bytes"] == len(body)  # and its body still counts
            refused = await other.call("host.http.do", {"url": upstream.url + "/big"}, timeout=T)
            assert refused["error"]["code"] == -32001, refused
            assert "max_total_body_bytes" in refused["error"]["message"]
            transport(hog).resume_reading()
            answer = await hog.line(timeout=T)
            assert base64.b64decode(answer["result"]["Body"]) == body
            await until(holds(ctl, "body_bytes", lambda n: n == 0))
            served: dict[str, Any] = await other.call("host.http.do", {"url": upstream.url + "/big"}, timeout=T)
            assert base64.b64decode(served["result"]["Body"]) == body
    finally:
        assert await hp.stop() == 0
