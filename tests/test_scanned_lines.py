"""Long lines read off the event loop (``hostd.rpc.scan``), on a real hostd: what the handler
sees, the order of the lines queued behind a long one, EOF and disconnects while a line is
being scanned, and the scanner's fault boundary. (That each answer is the usual path's answer
is ``tests/test_long_lines.py``; the C pass itself is ``tests/test_scan_c.py``.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from hostd.client import Client
from hostd.rpc import scan
from hostd.rpc.messages import LONG_LINE
from tests.support.hostd_proc import HostdProcess, running_hostd
from tests.support.raw import RawConn, hello_ok

pytestmark = pytest.mark.anyio

NESTED = b"[" * 200 + b"1" + b"]" * 200
DEEP = b"[" + b",".join([NESTED] * 300) + b"]"  # ~120 KiB, 201 deep
HELLO = b'{"jsonrpc":"2.0","id":%d,"method":"hostd.hello"}\n'


def _log(rid: int, fields: bytes, level: bytes = b"debug") -> bytes:
    return b'{"jsonrpc":"2.0","id":%d,"method":"host.log","params":{"level":"%s","message":"long","fields":%s}}\n' % (
        rid,
        level,
        fields,
    )


async def _totals(hp: HostdProcess) -> dict[str, Any]:
    ctl = await hp.connect_control()
    try:
        status = await ctl.call("hostd.status", {})
    finally:
        await ctl.aclose()
    totals: dict[str, Any] = status["totals"]
    return {**totals, "sessions": len(status["sessions"])}


def test_the_scanner_is_built() -> None:
    # make install builds it (pip needs a C compiler and Python's headers, which CI has):
    # without it long lines are still answered, on the loop, and nothing here would test it.
    assert scan.available()


async def test_a_long_line_is_scanned_and_a_short_one_is_not(hp: HostdProcess) -> None:
    assert hp.socket is not None
    async with await RawConn.open(hp.socket) as conn:
        await conn.send(_log(1, b'{"d":' + DEEP + b"}"))
        assert (await conn.line()) == {"jsonrpc": "2.0", "id": 1, "result": {}}
        await conn.send(_log(2, b'{"n":1}'))
        assert (await conn.line())["id"] == 2
    assert (await _totals(hp))["lines_scanned"] == 1


async def test_the_handler_sees_the_whole_of_a_big_raw_field(hp: HostdProcess) -> None:
    """host.log's fields reach the handler as the line holds them, not as the token that stood in
    for them: the log line counts their bytes (fields over 4x the log line are not decoded)."""
    assert hp.socket is not None
    fields = b'{"a":' + DEEP + b',"b":' + DEEP + b',"c": ' + DEEP + b"}"
    async with await RawConn.open(hp.socket) as conn:
        await conn.send(_log(1, fields, level=b"info"))
        assert (await conn.line())["result"] == {}
    line = await hp.wait_log('"msg":"long"')
    assert orjson.loads(line)["fields_not_logged"] == f"{len(fields)} bytes"


async def test_a_big_credential_is_saved_byte_for_byte(short_tmp: Path) -> None:
    auth = short_tmp / "auth"
    auth.mkdir()
    credential = b'{ "type" : "claude",\t"d": ' + DEEP + b" }"
    assert LONG_LINE < len(credential) < 1024 * 1024
    async with running_hostd(short_tmp, "--auth-dir", str(auth), control=True) as hp:
        assert hp.socket is not None
        line = b'{"jsonrpc":"2.0","id":1,"method":"host.auth.save","params":{"name":"big.json","json":%s}}\n'
        async with await RawConn.open(hp.socket) as conn:
            await conn.send(line % credential)
            answer = await conn.line()
            assert "error" not in answer, answer
        assert (auth / "big.json").read_bytes() == credential
        assert (await _totals(hp))["lines_scanned"] == 1


async def test_lines_behind_a_long_one_are_answered_in_order_before_eof(hp: HostdProcess) -> None:
    """One write: a long line, then short ones and more long ones, then EOF. Every line is answered,
    in the order sent (all are inline), and only then does hostd close the connection."""
    assert hp.socket is not None
    batch = [_log(1, DEEP), HELLO % 2, HELLO % 3, _log(4, b'{"d":' + DEEP + b"}"), HELLO % 5, _log(6, b"{}")]
    reader, writer = await asyncio.open_unix_connection(hp.socket, limit=1 << 24)
    writer.write(b"".join(batch))
    writer.write_eof()
    ids = []
    async with asyncio.timeout(20):
        while line := await reader.readline():
            ids.append(orjson.loads(line)["id"])
    writer.close()
    assert ids == [1, 2, 3, 4, 5, 6]
    assert (await _totals(hp))["lines_scanned"] == 2


async def test_lines_behind_a_long_one_on_stdio_are_answered_before_hostd_exits(short_tmp: Path) -> None:
    async with running_hostd(short_tmp, stdio=True) as hp:
        assert hp.proc.stdin is not None
        hp.proc.stdin.write(_log(1, DEEP) + HELLO % 2 + _log(3, DEEP) + HELLO % 4)
        hp.proc.stdin.close()
        assert hp.proc.stdout is not None
        ids = []
        async with asyncio.timeout(20):
            while line := await hp.proc.stdout.readline():
                ids.append(orjson.loads(line)["id"])
        assert ids == [1, 2, 3, 4]
        async with asyncio.timeout(20):
            assert await hp.proc.wait() == 0


async def test_a_peer_gone_while_its_long_line_is_scanned_leaves_nothing(hp: HostdProcess) -> None:
    assert hp.socket is not None
    for _ in range(5):
        _, writer = await asyncio.open_unix_connection(hp.socket)
        writer.write(_log(1, b"[" + b",".join([DEEP] * 40) + b"]"))  # ~4.8 MiB
        writer.transport.abort()
    async with asyncio.timeout(10):
        while (await _totals(hp))["sessions"]:  # each call is a round trip: no sleep needed
            pass
    await hello_ok(hp.socket)


async def test_a_scanner_fault_leaves_the_line_to_the_usual_way(short_tmp: Path) -> None:
    """The scan's fault boundary: the line is still answered (decoded on the loop, as without the
    scanner), the fault is logged once, and a neighbour session keeps answering."""
    async with running_hostd(short_tmp, control=True, env={"HOSTD_TEST_FAULTS": "scan"}) as hp:
        assert hp.socket is not None
        async with await RawConn.open(hp.socket) as conn:
            await conn.send(_log(7, b'{"d":' + DEEP + b"}"))
            assert (await conn.line()) == {"jsonrpc": "2.0", "id": 7, "result": {}}
            await hp.wait_log("line scan failed", "injected fault at scan")
            await hello_ok(hp.socket)
            await conn.send(HELLO % 8)
            assert (await conn.line())["id"] == 8
        assert (await _totals(hp))["lines_scanned"] == 0


async def test_a_neighbour_is_served_while_long_lines_arrive(hp: HostdProcess) -> None:
    """Twenty long lines in one write from one session; a second session's calls, made meanwhile,
    are all answered, and the first session's answers come back in order."""
    assert hp.socket is not None
    heavy = await Client.connect(f"unix:{hp.socket}")
    reader, writer = await asyncio.open_unix_connection(hp.socket, limit=1 << 24)
    try:
        writer.write(b"".join(_log(i, DEEP) for i in range(20)))
        answered = [(await heavy.call("hostd.hello", {}))["server"] for _ in range(20)]
        assert answered == ["hostd"] * 20
        ids = [orjson.loads(await reader.readline())["id"] for _ in range(20)]
        assert ids == list(range(20))
    finally:
        writer.close()
        await heavy.aclose()


async def test_long_lines_waiting_for_the_scanner_are_bounded(short_tmp: Path) -> None:
    """Long lines wait for the scanner counted against max_total_request_bytes; one that would
    pass it is decoded on the loop instead: still answered, nothing held after."""
    cfg = short_tmp / "hostd.toml"
    cfg.write_text("[limits]\nmax_total_request_bytes = 400000\n")
    async with running_hostd(short_tmp, "--config", str(cfg), control=True) as hp:
        assert hp.socket is not None
        over = _log(1, b"[" + b",".join([DEEP] * 4) + b"]")  # ~480 KB: over the budget
        under = _log(2, DEEP)
        assert len(under) < 400_000 < len(over)
        async with await RawConn.open(hp.socket) as conn:
            await conn.send(over + under)
            assert [(await conn.line())["id"] for _ in range(2)] == [1, 2]
        totals = await _totals(hp)
        assert totals["lines_scanned"] == 1  # the line under the budget
        ctl = await hp.connect_control()
        try:
            buffered = (await ctl.call("hostd.status", {}))["buffered"]
            assert buffered["request_bytes"] == buffered["scan_bytes"] == 0
        finally:
            await ctl.aclose()
