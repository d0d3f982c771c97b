"""PROTOCOL.md §1-2 and §4: framing, the JSON-RPC mapping, limits and cancellation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from hostd.client import Client, RpcError
from tests.support.helpers import nothing_answered_before_a_sentinel
from tests.support.hostd_proc import HostdProcess, running_hostd
from tests.support.upstream import Upstream

pytestmark = pytest.mark.anyio


async def ask(c: Client, line: bytes | str, timeout: float = 5) -> Any:
    """Send one raw line and return the next message hostd sends back."""
    await c.send_raw(line.encode() if isinstance(line, str) else line)
    return await c.read_message(timeout)


def req(id_: Any, method: str, params: Any = None) -> str:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        msg["params"] = params
    return orjson.dumps(msg).decode() + "\n"


async def test_parse_error_answers_with_null_id_and_session_continues(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        answer = await ask(c, "{not json\n")
        assert answer["id"] is None
        assert answer["error"]["code"] == -32700
        assert answer["error"]["data"] == {"code": "parse_error"}
        assert await c.call("host.log", {"message": "still here"}, timeout=5) == {}


async def test_blank_lines_and_crlf_are_accepted(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        answer = await ask(c, "\n\r\n   \n" + req(7, "host.log").replace("\n", "\r\n"))
        assert answer == {"jsonrpc": "2.0", "id": 7, "result": {}}


async def test_over_long_line_is_rejected_and_next_request_works(short_tmp: Path) -> None:
    async with running_hostd(short_tmp, "--max-line-bytes", "1024") as hp, await hp.connect() as c:
        big = req(1, "host.log", {"message": "x" * 5000})
        answer = await ask(c, big)
        assert answer["id"] is None
        assert answer["error"]["code"] == -32600
        assert answer["error"]["message"] == "message too large"
        assert await c.call("host.log", {"message": "after"}, timeout=5) == {}


async def test_over_long_line_split_across_writes_is_discarded_up_to_its_newline(short_tmp: Path) -> None:
    async with running_hostd(short_tmp, "--max-line-bytes", "1024") as hp, await hp.connect() as c:
        await c.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"host.log","params":{"message":"')
        for _ in range(10):
            await c.send_raw(b"y" * 500)
        answer = await c.read_message(5)
        assert answer["error"]["message"] == "message too large"
        await c.send_raw(b'"}}\n')  # the rest of the over-long line: dropped silently
        assert await c.call("host.log", {}, timeout=5) == {}
        await nothing_answered_before_a_sentinel(c)  # the dropped rest got no answer


@pytest.mark.parametrize(
    "line",
    [
        '{"jsonrpc":"1.0","id":1,"method":"host.log"}',
        '{"id":1,"method":"host.log"}',
        '{"jsonrpc":"2.0","id":1,"method":5}',
        '{"jsonrpc":"2.0","id":true,"method":"host.log"}',
        '{"jsonrpc":"2.0","id":{"a":1},"method":"host.log"}',
        '{"jsonrpc":"2.0","id":null,"method":"host.log"}',
        '{"jsonrpc":"2.0","method":5}',
        "42",
        '"a string"',
    ],
)
async def test_invalid_requests_get_32600_with_null_id(hostd: HostdProcess, line: str) -> None:
    async with await hostd.connect() as c:
        answer = await ask(c, line + "\n")
        assert answer["id"] is None
        assert answer["error"]["code"] == -32600
        assert answer["error"]["data"]["code"] == "invalid_request"


async def test_unknown_methods(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.fly", timeout=5)
        assert (e.value.code, e.value.message) == (-32601, "unsupported host callback host.fly")
        assert e.value.data == {"code": "method_not_found"}
        with pytest.raises(RpcError) as e:
            await c.call("hostd.status", timeout=5)  # a control method, not on a plugin socket
        assert (e.value.code, e.value.message) == (-32601, "method not found: hostd.status")


@pytest.mark.parametrize("params", ["[1]", '"x"', "3", "true", "null"])
async def test_params_must_be_an_object(hostd: HostdProcess, params: str) -> None:
    async with await hostd.connect() as c:
        answer = await ask(c, f'{{"jsonrpc":"2.0","id":3,"method":"host.log","params":{params}}}\n')
        assert answer["id"] == 3
        assert answer["error"]["code"] == -32602
        assert answer["error"]["message"] == "params must be an object"


async def test_absent_params_mean_empty_object(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        assert await ask(c, '{"jsonrpc":"2.0","id":"s","method":"host.log"}\n') == {
            "jsonrpc": "2.0",
            "id": "s",
            "result": {},
        }


async def test_wrong_param_type_names_the_field(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", {"url": 5}, timeout=5)
    assert e.value.code == -32602
    assert e.value.message == "decode host http request: Expected `str`, got `int` - at `$.url`"
    assert e.value.data == {"code": "invalid_params"}


async def test_invalid_base64_names_the_field(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", {"url": "http://127.0.0.1:1/", "body": "not base64!"}, timeout=5)
    assert e.value.code == -32602
    assert e.value.message.startswith("decode host http request: ")
    assert "$.body" in e.value.message


async def test_unknown_param_keys_are_ignored(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        assert await c.call("host.log", {"message": "m", "surprise": [1, 2]}, timeout=5) == {}


async def test_string_and_number_ids_are_echoed(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        assert (await ask(c, req("abc", "host.log")))["id"] == "abc"
        assert (await ask(c, req(-12, "host.log")))["id"] == -12
        assert (await ask(c, req(1.5, "host.log")))["id"] == 1.5


async def test_notifications_are_never_answered_even_errors(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        await c.send_raw(b'{"jsonrpc":"2.0","method":"host.log","params":{"message":"n"}}\n')
        await c.send_raw(b'{"jsonrpc":"2.0","method":"host.nope"}\n')
        await c.send_raw(b'{"jsonrpc":"2.0","method":"host.log","params":[1]}\n')
        answer = await ask(c, req(99, "host.log"))
        assert answer["id"] == 99  # the first thing back answers the request, not the notifications


async def test_empty_batch_is_one_invalid_request(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        answer = await ask(c, "[]\n")
        assert answer["id"] is None
        assert answer["error"]["code"] == -32600


async def test_batch_of_only_notifications_gets_nothing(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        await c.send_raw(b'[{"jsonrpc":"2.0","method":"host.log"},{"jsonrpc":"2.0","method":"host.log"}]\n')
        answer = await ask(c, req(5, "host.log"))
        assert answer["id"] == 5


async def test_batch_answers_non_notifications_in_one_array(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "host.log"},
            {"jsonrpc": "2.0", "method": "host.log"},
            {"jsonrpc": "2.0", "id": 2, "method": "host.nope"},
            5,
            {"jsonrpc": "2.0", "id": 3, "method": "hostd.hello"},
        ]
        answer = await ask(c, orjson.dumps(batch) + b"\n")
        assert isinstance(answer, list)
        by_id = {a["id"]: a for a in answer if a["id"] is not None}
        assert by_id[1]["result"] == {}
        assert by_id[2]["error"]["code"] == -32601
        assert by_id[3]["result"]["server"] == "hostd"
        invalid = [a for a in answer if a["id"] is None]
        assert len(invalid) == 1 and invalid[0]["error"]["code"] == -32600
        assert len(answer) == 4


async def test_batch_that_is_not_json_is_a_parse_error(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        answer = await ask(c, "[1, 2\n")
        assert answer["error"]["code"] == -32700


async def test_hello_sets_plugin_id_once(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        first = await c.call("hostd.hello", {"plugin_id": "alpha", "schema_version": 1}, timeout=5)
        second = await c.call("hostd.hello", {"plugin_id": "beta", "schema_version": 3}, timeout=5)
    assert first["schema_version"] == 3  # hostd's own, whatever the plugin sent
    assert first["session"] == second["session"]
    assert "host.http.do" in first["methods"] and "hostd.hello" in first["methods"]
    assert first["limits"] == {
        "max_line_bytes": 16 * 1024 * 1024,
        "max_in_flight": 256,
        "max_streams": 1024,
        "stream_idle_timeout_s": 300.0,
        "emit_queue": 16,
        "stream_piece_bytes": 32768,
    }
    line = await hostd.wait_log('"msg":"hello plugin"')  # the log line names the first id
    assert '"plugin":"alpha"' in line


async def test_answer_from_plugin_with_unknown_id_is_dropped(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        await c.send_raw(b'{"jsonrpc":"2.0","id":"hostd-999","result":{}}\n')
        answer = await ask(c, req(1, "host.log"))
        assert answer["id"] == 1
    await hostd.wait_log("unmatched answer dropped")


async def test_requests_run_concurrently_a_blocked_read_does_not_delay_log(
    hostd: HostdProcess, upstream: Upstream
) -> None:
    release = asyncio.Event()

    upstream.hold("/hold", [b"first"], release, [b"second"])

    async with await hostd.connect() as c:
        opened = await c.call("host.http.do_stream", {"url": upstream.url + "/hold"}, timeout=5)
        sid = opened["stream_id"]
        assert (await c.call("host.http.stream_read", {"stream_id": sid}, timeout=5))["payload"] == "Zmlyc3Q="
        blocked = asyncio.ensure_future(c.call("host.http.stream_read", {"stream_id": sid}, timeout=10))
        assert await c.call("host.log", {"message": "not delayed"}, timeout=5) == {}
        assert not blocked.done()
        release.set()
        assert (await blocked)["payload"] == "c2Vjb25k"


async def test_cancel_request_answers_32800_and_keeps_the_stream(hostd: HostdProcess, upstream: Upstream) -> None:
    release = asyncio.Event()

    upstream.hold("/hold", [], release, [b"data"])

    async with await hostd.connect() as c:
        sid = (await c.call("host.http.do_stream", {"url": upstream.url + "/hold"}, timeout=5))["stream_id"]
        rid = c.next_id()
        fut = c.expect(rid)
        await c.send({"jsonrpc": "2.0", "id": rid, "method": "host.http.stream_read", "params": {"stream_id": sid}})
        await c.notify("$/cancelRequest", {"id": rid})
        with pytest.raises(RpcError) as e:
            await asyncio.wait_for(fut, 5)
        assert e.value.code == -32800
        assert e.value.data == {"code": "request_cancelled"}
        release.set()
        assert (await c.call("host.http.stream_read", {"stream_id": sid}, timeout=5))["payload"] == "ZGF0YQ=="


async def test_cancel_of_unknown_request_is_ignored(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        await c.notify("$/cancelRequest", {"id": 12345})
        await c.notify("$/cancelRequest", [1])
        assert await c.call("host.log", timeout=5) == {}


async def test_in_flight_limit_answers_32001_and_drops_notifications(short_tmp: Path, upstream: Upstream) -> None:
    release = asyncio.Event()

    upstream.hold("/hold", [], release, [b"x"])

    async with running_hostd(short_tmp, "--max-in-flight", "2") as hp, await hp.connect() as c:
        sid = (await c.call("host.http.do_stream", {"url": upstream.url + "/hold"}, timeout=5))["stream_id"]
        reads = []
        for _ in range(2):
            rid = c.next_id()
            reads.append(c.expect(rid))
            await c.send({"jsonrpc": "2.0", "id": rid, "method": "host.http.stream_read", "params": {"stream_id": sid}})
        await c.notify("host.http.do", {"url": upstream.url + "/hold"})
        with pytest.raises(RpcError) as e:
            await c.call("host.http.stream_read", {"stream_id": sid}, timeout=5)
        assert e.value.code == -32001
        assert e.value.data == {"code": "limit_exceeded"}
        assert await c.call("host.log", timeout=5) == {}  # inline calls are not held back
        await hp.wait_log("notification dropped: too many in-flight calls")
        release.set()
        async with asyncio.timeout(10):
            results = await asyncio.gather(*reads)
        assert {"payload": "eA=="} in results


async def test_many_concurrent_calls_are_all_answered(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        results = await asyncio.gather(*(c.call("host.log", {"message": str(i)}, timeout=10) for i in range(500)))
    assert results == [{}] * 500


# (message, answered with a result): every shape Dispatcher.inline takes or declines.
INLINE_SHAPES: list[tuple[dict[str, Any], bool]] = [
    ({"id": 1, "method": "host.log", "params": {"level": "info", "message": "m"}}, True),
    ({"id": -5, "method": "host.log", "params": {"Level": "info", "Message": "go-cased"}}, True),
    ({"id": 2**63 - 1, "method": "host.log", "params": {"level": 5}}, False),
    ({"id": 3, "method": "host.log", "params": {"message": "m", "fields": "not an object"}}, False),
    ({"id": 4, "method": "host.log", "params": {"message": "m", "host_callback_id": "no-such-scope"}}, True),
    ({"id": 5, "method": "host.log"}, True),
    ({"id": 6, "method": "host.log", "params": None}, False),
    ({"id": 7, "method": "host.log", "params": []}, False),
    ({"id": 2**63, "method": "host.log", "params": {"message": "m"}}, False),
    ({"id": 1.5, "method": "host.log", "params": {"message": "m"}}, True),
    ({"id": "s", "method": "host.log", "params": {"message": "m"}}, True),
    ({"id": True, "method": "host.log", "params": {"message": "m"}}, False),
    ({"id": None, "method": "host.log", "params": {"message": "m"}}, False),
    ({"id": 8, "method": "host.log", "params": {"message": "m"}, "jsonrpc": "1.0"}, False),
    ({"id": 9, "method": "host.stream.close", "params": {"stream_id": "no-such-stream"}}, True),
    ({"id": 10, "method": "host.affinity.lookup", "params": {"key": "k"}}, False),
]


async def test_an_inline_call_is_answered_alone_as_in_a_batch_of_one(hostd: HostdProcess) -> None:
    """Alone, a line takes Dispatcher.inline (the common call's shortest way, which declines any
    other shape); in a batch, every element takes Dispatcher.envelope: the answers must agree."""
    async with await hostd.connect() as c:
        for shape, answered in INLINE_SHAPES:
            message = {"jsonrpc": "2.0", **shape}
            alone = await ask(c, orjson.dumps(message) + b"\n")
            [in_batch] = await ask(c, orjson.dumps([message]) + b"\n")
            assert alone == in_batch, shape
            assert ("result" in alone) is answered, alone
