"""Storms (issue 10): 1,000 plugin sessions open an HTTP stream and a model stream each,
start a read that cannot finish, and vanish: a plain close, an abortive close (SO_LINGER 0
with unread answers, which a Unix socket reports to hostd as ECONNRESET), or the SIGKILL of
the client process that held them. Afterwards hostd holds nothing: no session, no stream,
every upstream connection dropped, and its fd and task counts back to their baseline.

The upstreams are real servers on 127.0.0.1 that hold their bodies open (tests/support):
an HTTP upstream whose body never ends, and the fake proxy whose SSE answer stops after
its first event until the client goes away.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.fake_proxy import FakeProxy, Sse, sse_event
from tests.support.hostd_proc import HostdProcess, start_hostd
from tests.support.raw import RawConn, hello_ok
from tests.support.upstream import Upstream

pytestmark = pytest.mark.anyio

SESSIONS = 1000
BATCH = 50  # sessions opened at once (each holds two upstream connections)
KILLED_PROCESSES = 4
PER_PROCESS = 25  # sessions held by each client process that gets SIGKILLed
FD_SLACK = 8
TASK_SLACK = 4
SETTLE_TIMEOUT = 30.0
MODEL_BODY = base64.b64encode(orjson.dumps({"model": "m", "stream": True})).decode()


class Sock:
    """A plugin session on a plain non-blocking socket: the test decides exactly when it
    reads, so it can leave answers unread in the kernel when it closes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, path: str) -> Sock:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, path)
        return cls(sock)

    async def send(self, message: dict[str, Any]) -> None:
        await self.loop.sock_sendall(self.sock, orjson.dumps(message) + b"\n")

    async def line(self) -> Any:
        while b"\n" not in self.buf:
            data = await self.loop.sock_recv(self.sock, 65536)
            if not data:
                raise EOFError("hostd closed the session")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return orjson.loads(line)

    async def call(self, rid: str, method: str, params: dict[str, Any]) -> Any:
        await self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        answer = await self.line()
        assert answer["id"] == rid and "result" in answer, answer
        return answer["result"]

    async def readable(self) -> None:
        """Wait until hostd's answer is in the kernel, without reading it."""
        ready: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self.loop.add_reader(self.sock.fileno(), wake)
        try:
            async with asyncio.timeout(10):
                await ready
        finally:
            self.loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        self.sock.close()

    async def reset(self) -> None:
        """Close abortively: SO_LINGER 0 and an answer left unread."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.send({"jsonrpc": "2.0", "id": "unread", "method": "hostd.hello", "params": {}})
        await self.readable()
        self.sock.close()


async def open_streams(conn: Sock, upstream_url: str) -> None:
    """An HTTP stream and a model stream, each read once, then a read on each that waits."""
    http = await conn.call("h", "host.http.do_stream", {"url": upstream_url + "/hold"})
    first = await conn.call("h1", "host.http.stream_read", {"stream_id": http["stream_id"]})
    assert base64.b64decode(first["payload"]) == b"first", first
    model_params = {"entry_protocol": "openai", "model": "m", "stream": True, "body": MODEL_BODY}
    model = await conn.call("m", "host.model.execute_stream", model_params)
    first = await conn.call("m1", "host.model.stream_read", {"stream_id": model["stream_id"]})
    assert first["done"] is False and first["payload"], first
    await conn.send(
        {"jsonrpc": "2.0", "id": "h2", "method": "host.http.stream_read", "params": {"stream_id": http["stream_id"]}}
    )
    await conn.send(
        {"jsonrpc": "2.0", "id": "m2", "method": "host.model.stream_read", "params": {"stream_id": model["stream_id"]}}
    )


CLIENT = r"""
import base64, socket, sys, orjson
path, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = base64.b64encode(orjson.dumps({"model": "m", "stream": True})).decode()
held = []

def call(s, f, rid, method, params):
    s.sendall(orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}) + b"\n")
    answer = orjson.loads(f.readline())
    assert "result" in answer, answer
    return answer["result"]

for i in range(count):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rb")
    http = call(s, f, "h", "host.http.do_stream", {"url": url + "/hold"})["stream_id"]
    call(s, f, "h1", "host.http.stream_read", {"stream_id": http})
    model = call(s, f, "m", "host.model.execute_stream",
                 {"entry_protocol": "openai", "model": "m", "stream": True, "body": body})["stream_id"]
    call(s, f, "m1", "host.model.stream_read", {"stream_id": model})
    for rid, method, sid in (("h2", "host.http.stream_read", http), ("m2", "host.model.stream_read", model)):
        s.sendall(orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": {"stream_id": sid}}) + b"\n")
    held.append((s, f))
print("ready", flush=True)
sys.stdin.read()
"""


@dataclass
class Storm:
    hp: HostdProcess
    ctl: RawConn
    upstream: Upstream
    proxy: FakeProxy
    release: asyncio.Event
    rid: int = 0

    async def status(self) -> dict[str, Any]:
        self.rid += 1
        answer = await self.ctl.call("hostd.status", {}, rid=self.rid)
        return dict(answer["result"])

    def plan_model_streams(self, n: int) -> None:
        """The next ``n`` model streams: one event, then nothing until the client leaves."""
        never = asyncio.Event()
        self.proxy.plan(*[Sse([sse_event({"n": 1}), sse_event({"n": 2})], gates={1: never}) for _ in range(n)])

    async def settled(self, base: dict[str, Any], opened: int) -> dict[str, Any]:
        """Poll ``hostd.status`` until hostd holds nothing more than at ``base``."""
        last: dict[str, Any] = {}
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                while True:
                    last = await self.status()
                    totals, process = last["totals"], last["process"]
                    if (
                        last["sessions"] == []
                        and totals["streams_opened"] == base["totals"]["streams_opened"] + opened
                        and totals["streams_closed"] == totals["streams_opened"]
                        and process["fds"] <= base["process"]["fds"] + FD_SLACK
                        and process["tasks"] <= base["process"]["tasks"] + TASK_SLACK
                    ):
                        return last
                    # Poll again when an upstream sees a connection go, or after 0.1 s at most.
                    waits = [asyncio.ensure_future(self.proxy.changed.wait())]
                    waits.append(asyncio.ensure_future(self.upstream.changed.wait()))
                    await asyncio.wait(waits, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
                    for w in waits:
                        w.cancel()
        except TimeoutError:
            pytest.fail(f"hostd did not settle: base {base['process']} {base['totals']}, now {last}")


@pytest.fixture
async def storm(short_tmp: Path) -> AsyncIterator[Storm]:
    upstream = await Upstream().start()
    proxy = await FakeProxy().start()
    release = asyncio.Event()
    upstream.hold("/hold", [b"first"], release, [b"last"])
    hp = await start_hostd(short_tmp, "--model-base-url", proxy.url, control=True)
    try:
        assert hp.control is not None
        async with await RawConn.open(hp.control) as ctl:
            yield Storm(hp, ctl, upstream, proxy, release)
    finally:
        release.set()
        code = await hp.stop()
        await upstream.stop()
        await proxy.stop()
    assert code == 0


async def session_that_vanishes(storm: Storm, how: str) -> None:
    assert storm.hp.socket is not None
    conn = await Sock.open(storm.hp.socket)
    try:
        await open_streams(conn, storm.upstream.url)
    except BaseException:
        conn.close()
        raise
    if how == "close":
        conn.close()
    else:
        await conn.reset()


async def killed_clients(storm: Storm, processes: int, per_process: int) -> None:
    """Client processes that each open ``per_process`` sessions mid-read, then get SIGKILL."""
    assert storm.hp.socket is not None
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENT,
            storm.hp.socket,
            storm.upstream.url,
            str(per_process),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            async with asyncio.timeout(60):
                assert await proc.stdout.readline() == b"ready\n"
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
        for proc in procs:
            assert await proc.wait() == -signal.SIGKILL


async def test_a_thousand_sessions_vanish_mid_read_and_hostd_holds_nothing_after(storm: Storm) -> None:
    # Warm up (pools, caches, lazily created tasks), then take the baseline.
    storm.plan_model_streams(BATCH)
    await asyncio.gather(*(session_that_vanishes(storm, "close") for _ in range(BATCH)))
    base = await storm.settled(await storm.status(), 0)
    await storm.upstream.wait_for(lambda: storm.upstream.open_connections == 0)
    http_before = storm.upstream.total_connections
    model_before = len(storm.proxy.exchanges)

    killed = KILLED_PROCESSES * PER_PROCESS
    in_process = SESSIONS - killed
    storm.plan_model_streams(SESSIONS)
    kinds = ["close", "reset"] * (in_process // 2)
    for start in range(0, len(kinds), BATCH):
        await asyncio.gather(*(session_that_vanishes(storm, how) for how in kinds[start : start + BATCH]))
    await killed_clients(storm, KILLED_PROCESSES, PER_PROCESS)

    after = await storm.settled(base, 2 * SESSIONS)
    assert after["sessions"] == []
    # Every upstream connection was dropped by hostd (the bodies never end on their own).
    await storm.upstream.wait_for(lambda: storm.upstream.open_connections == 0, timeout=SETTLE_TIMEOUT)
    assert storm.upstream.total_connections - http_before == SESSIONS
    exchanges = storm.proxy.exchanges[model_before:]
    assert len(exchanges) == SESSIONS
    await storm.proxy.wait_for(lambda: all(e.disconnected.is_set() for e in exchanges), timeout=SETTLE_TIMEOUT)
    assert not any(e.completed for e in exchanges)
    assert after["totals"]["session_crashes"] == 0
    print(
        f"\nstorm: {SESSIONS} sessions ({in_process // 2} closed, {in_process // 2} reset, {killed} in"
        f" {KILLED_PROCESSES} SIGKILLed clients), {2 * SESSIONS} streams; fds {base['process']['fds']} ->"
        f" {after['process']['fds']}, tasks {base['process']['tasks']} -> {after['process']['tasks']}"
    )
    assert storm.hp.proc.returncode is None
    assert storm.hp.socket is not None
    await hello_ok(storm.hp.socket)
