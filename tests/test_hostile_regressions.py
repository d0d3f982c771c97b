"""Regressions for bugs tests/test_hostile_fuzz.py found: each test states what the protocol says."""

from __future__ import annotations

import pytest

from tests.support.hostd_proc import HostdProcess
from tests.support.raw import RawConn

pytestmark = pytest.mark.anyio


async def test_a_batch_of_a_task_method_is_answered_without_waiting_for_the_next_line(hp: HostdProcess) -> None:
    """§2 batches: the answer array is written when the last element ends. A batch whose
    element runs as a task (anything not inline: host.http.stream_read, host.auth.*,
    host.http.do, host.model.*) was written only when the session read its next line."""
    assert hp.socket is not None
    async with await RawConn.open(hp.socket) as conn:
        await conn.send(b'[{"jsonrpc":"2.0","id":1,"method":"host.http.stream_read","params":{"stream_id":"x"}}]\n')
        answer = await conn.line(timeout=5)  # it used to wait for the next line
        assert isinstance(answer, list) and answer[0]["id"] == 1


@pytest.mark.parametrize(
    "line",
    [
        b'{"result":1,"id":true}',
        b'{"result":1,"id":{}}',
        b'{"error":{"code":1,"message":"x"},"id":[1]}',
        b'{"result":1,"jsonrpc":5}',
        b'[{"result":1,"id":true}]',
    ],
)
async def test_an_answer_with_an_ill_typed_id_or_jsonrpc_is_never_answered(hp: HostdProcess, line: bytes) -> None:
    """§2/§4: a message with result or error and no method is never answered, with or
    without an id. An id that is not a number/string/null (or a non-string jsonrpc) was
    answered -32600 ``invalid request: Expected ...``."""
    assert hp.socket is not None
    async with await RawConn.open(hp.socket) as conn:
        await conn.send(line + b"\n")
        assert (await conn.call("hostd.hello", {}, rid="sentinel"))["id"] == "sentinel"


async def test_an_integer_id_beyond_64_bits_is_echoed_exactly(hp: HostdProcess) -> None:
    """JSON-RPC: the answer carries the request's id. ``"id":123456789012345678901234567890``
    was answered with ``"id":1.2345678901234568e+29`` (a float: the client cannot match it);
    it is refused -32600 as 1e400 is."""
    assert hp.socket is not None
    async with await RawConn.open(hp.socket) as conn:
        await conn.send(b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"hostd.hello"}\n')
        answer = await conn.line()
        assert answer["id"] == 123456789012345678901234567890 or (
            answer["id"] is None and answer["error"]["code"] == -32600
        ), answer


@pytest.mark.parametrize(
    "line",
    [
        b'{"jsonrpc":' + b'{"a":' * 3000 + b"1" + b"}" * 3000 + b',"id":1,"method":"hostd.hello"}',
        b'{"jsonrpc":"2.0","method":' + b"[" * 3000 + b"]" * 3000 + b',"id":1}',
        b"0.5L\x9d=",
        b'{"jsonrpc":"2.0","id":true,"method":"hostd.hello"} trailing',
    ],
)
async def test_a_line_that_is_not_json_is_a_parse_error(hp: HostdProcess, line: bytes) -> None:
    """§2: -32700 when the line is not JSON; §4: nesting deeper than the decoder's limit
    anywhere in the line is -32700. The typed envelope decoder refuses a member's type
    before it reaches the syntax error or the depth: it used to answer -32600."""
    assert hp.socket is not None
    async with await RawConn.open(hp.socket) as conn:
        await conn.send(line + b"\n")
        answer = await conn.line()
        assert answer["error"]["code"] == -32700, answer
