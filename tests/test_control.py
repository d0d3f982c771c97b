"""The control endpoint (PROTOCOL.md §10) and hostd's requests to plugins, against a real hostd.

The "plugin" here is this test process on the plugin socket (hostd.client.Client), so each
message hostd sends it can be checked; tests/test_emit.py uses real plugin processes.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hostd import __version__
from hostd.client import Client, RpcError
from tests.support.helpers import plugin
from tests.support.hostd_proc import HostdProcess, running_hostd

pytestmark = pytest.mark.anyio

T = 5.0


@pytest.fixture(scope="module")
async def shared() -> AsyncIterator[HostdProcess]:
    """One hostd for the tests that only look at their own calls."""
    with tempfile.TemporaryDirectory(prefix="hostd-", dir="/tmp") as tmp:
        async with running_hostd(Path(tmp), control=True) as proc:
            yield proc


async def next_request(client: Client, method: str | None = None, timeout: float = T) -> dict[str, Any]:
    """The next request hostd sends this plugin (one with no handler registered)."""
    message = await client.read_message(timeout=timeout)
    assert isinstance(message, dict), message
    if method is not None:
        assert message.get("method") == method, message
    return message


async def raw_call(client: Client, rid: Any, method: str, params: Any) -> asyncio.Future[Any]:
    fut = client.expect(rid)
    await client.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
    return fut


# hostd.status ---------------------------------------------------------------------------


async def test_status_lists_plugin_sessions_with_stream_counts_and_totals(hp: HostdProcess) -> None:
    p, session = await plugin(hp, "status-demo")
    async with p, await hp.connect_control() as ctl:
        status = await ctl.call("hostd.status", {}, timeout=T)
    assert status["version"] == __version__
    assert 0 < status["uptime_s"] <= time.monotonic() - hp.started_at
    [entry] = [s for s in status["sessions"] if s["session"] == session]
    assert entry["plugin_id"] == "status-demo"
    assert entry["peer_pid"] == os.getpid()
    assert entry["peer_uid"] == os.getuid()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["opened_at"])
    assert entry["in_flight"] == 0
    assert entry["streams"] == {"http": 0, "model": 0, "emit": 0}
    assert {"calls", "errors", "streams_opened", "streams_closed", "streams_reaped"} <= set(status["totals"])
    assert status["totals"]["calls"] >= 2


async def test_control_socket_is_created_0600(shared: HostdProcess) -> None:
    assert shared.control is not None
    assert stat.S_IMODE(os.stat(shared.control).st_mode) == 0o600


async def test_control_methods_exist_only_on_the_control_socket(shared: HostdProcess) -> None:
    async with await shared.connect() as p, await shared.connect_control() as ctl:
        with pytest.raises(RpcError) as on_plugin:
            await p.call("hostd.status", {}, timeout=T)
        with pytest.raises(RpcError) as on_control:
            await ctl.call("host.log", {"message": "x"}, timeout=T)
    assert (on_plugin.value.code, on_plugin.value.message) == (-32601, "method not found: hostd.status")
    assert (on_control.value.code, on_control.value.message) == (-32601, "unsupported host callback host.log")


# hostd.invoke ---------------------------------------------------------------------------


async def test_invoke_sends_params_with_a_fresh_callback_scope_and_embeds_the_result(shared: HostdProcess) -> None:
    p, _ = await plugin(shared, "echo")
    seen: list[dict[str, Any]] = []

    async def execute(params: dict[str, Any]) -> Any:
        seen.append(params)
        return {"text": "hi", "nested": {"list": [1, 2.5, None, "\n"]}}

    p.handlers["executor.execute"] = execute
    async with p, await shared.connect_control() as ctl:
        answer = await ctl.call(
            "hostd.invoke", {"plugin_id": "echo", "method": "executor.execute", "params": {"model": "m"}}, timeout=T
        )
        second = await ctl.call("hostd.invoke", {"plugin_id": "echo", "method": "executor.execute"}, timeout=T)
    assert answer == {"result": {"text": "hi", "nested": {"list": [1, 2.5, None, "\n"]}}}
    assert second["result"]["text"] == "hi"
    assert seen[0]["model"] == "m"
    assert re.fullmatch(r"[0-9a-f]{32}", seen[0]["host_callback_id"])
    assert "stream_id" not in seen[0]
    assert seen[1]["host_callback_id"] != seen[0]["host_callback_id"]


async def test_invoke_by_session_id(shared: HostdProcess) -> None:
    p, session = await plugin(shared, "by-session")

    async def who(params: dict[str, Any]) -> Any:
        return "me"

    p.handlers["who"] = who
    async with p, await shared.connect_control() as ctl:
        answer = await ctl.call("hostd.invoke", {"session": session, "method": "who"}, timeout=T)
    assert answer == {"result": "me"}


async def test_a_second_session_cannot_take_a_connected_plugin_id(shared: HostdProcess) -> None:
    """Issue 10 item 7: a hello claiming a live id is refused, and invokes still reach the holder."""
    holder, _ = await plugin(shared, "twin")
    intruder = await shared.connect()

    async def who(params: dict[str, Any]) -> Any:
        return {"callback_id_seen_by": "holder"}

    holder.handlers["who"] = who
    async with holder, intruder, await shared.connect_control() as ctl:
        with pytest.raises(RpcError) as refused:
            await intruder.call("hostd.hello", {"plugin_id": "twin"}, timeout=T)
        assert refused.value.error["code"] == -32002
        assert refused.value.error["message"] == "plugin id twin is already connected"
        # The refused session keeps its previous id (its session id).
        assert (await intruder.call("hostd.hello", {}, timeout=T))["session"].startswith("session-")
        answer = await ctl.call("hostd.invoke", {"plugin_id": "twin", "method": "who"}, timeout=T)
    assert answer["result"] == {"callback_id_seen_by": "holder"}


async def test_a_plugin_id_is_released_when_its_session_ends(shared: HostdProcess) -> None:
    first, sid = await plugin(shared, "phoenix")
    await first.aclose()
    await shared.wait_log('"session closed"', f'"session":"{sid}"')
    async with await shared.connect() as again:
        hello = await again.call("hostd.hello", {"plugin_id": "phoenix"}, timeout=T)
    assert hello["session"] != sid


async def test_an_invalid_plugin_id_is_invalid_params(hp: HostdProcess) -> None:
    async with await hp.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("hostd.hello", {"plugin_id": "bad id!"}, timeout=T)
    assert e.value.error["code"] == -32602
    assert e.value.error["message"] == "invalid plugin id"


async def test_invoke_without_such_plugin_session_fails(hp: HostdProcess) -> None:
    async with await hp.connect_control() as ctl:
        with pytest.raises(RpcError) as by_plugin:
            await ctl.call("hostd.invoke", {"plugin_id": "nope", "method": "x"}, timeout=T)
        with pytest.raises(RpcError) as by_session:
            await ctl.call("hostd.invoke", {"session": "session-999", "method": "x"}, timeout=T)
        status = await ctl.call("hostd.status", {}, timeout=T)
        # A control session is not a plugin: it cannot be invoked.
        with pytest.raises(RpcError) as control_target:
            await ctl.call("hostd.invoke", {"session": "session-1", "method": "x"}, timeout=T)
    assert (by_plugin.value.code, by_plugin.value.message) == (-32000, "no session for plugin nope")
    assert by_plugin.value.data["code"] == "host_call_failed"
    assert by_session.value.message == "no session for plugin session-999"
    assert status["control_sessions"] == 1 and status["sessions"] == []
    assert control_target.value.message == "no session for plugin session-1"


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"plugin_id": "p", "method": "m", "params": [1]}, "Expected `object | null`, got `array` - at `$.params`"),
        ({"plugin_id": "p"}, "method is required"),
        ({"method": "m"}, "session or plugin_id is required"),
        ({"plugin_id": "p", "method": "m", "timeout_s": 0}, "Expected `float` > 0.0 - at `$.timeout_s`"),
        ({"plugin_id": "p", "method": "m", "stream": "yes"}, "Expected `bool`, got `str` - at `$.stream`"),
    ],
)
async def test_invoke_params_that_do_not_decode(shared: HostdProcess, params: dict[str, Any], detail: str) -> None:
    async with await shared.connect_control() as ctl:
        with pytest.raises(RpcError) as e:
            await ctl.call("hostd.invoke", params, timeout=T)
    assert e.value.code == -32602
    assert e.value.message == f"decode hostd.invoke request: {detail}"


async def test_plugin_error_comes_back_unchanged(shared: HostdProcess) -> None:
    p, _ = await plugin(shared, "failing")
    error = {"code": -32099, "message": "model overloaded", "data": {"code": "overloaded", "retry_after": 3}}

    async def fail(params: dict[str, Any]) -> Any:
        raise RpcError(error)

    p.handlers["executor.execute"] = fail
    async with p, await shared.connect_control() as ctl:
        with pytest.raises(RpcError) as e:
            await ctl.call("hostd.invoke", {"plugin_id": "failing", "method": "executor.execute"}, timeout=T)
    assert e.value.error == error


async def test_invoke_timeout_fails_the_call_and_cancels_it_in_the_plugin(hp: HostdProcess) -> None:
    p, _ = await plugin(hp, "slow")
    async with p, await hp.connect_control() as ctl:
        call = asyncio.ensure_future(
            ctl.call("hostd.invoke", {"plugin_id": "slow", "method": "slow", "timeout_s": 0.3}, timeout=T)
        )
        request = await next_request(p, "slow")
        with pytest.raises(RpcError) as e:
            await call
        cancel = await next_request(p, "$/cancelRequest", timeout=2)
    assert (e.value.code, e.value.message) == (-32000, "plugin call timed out")
    assert cancel == {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": request["id"]}}


async def test_caller_cancel_is_answered_and_passed_on_to_the_plugin(hp: HostdProcess) -> None:
    p, _ = await plugin(hp, "cancelled")
    async with p, await hp.connect_control() as ctl:
        answer = await raw_call(ctl, "inv-1", "hostd.invoke", {"plugin_id": "cancelled", "method": "slow"})
        request = await next_request(p, "slow")
        await ctl.notify("$/cancelRequest", {"id": "inv-1"})
        with pytest.raises(RpcError) as e:
            await asyncio.wait_for(answer, T)
        cancel = await next_request(p, "$/cancelRequest", timeout=2)
    assert e.value.code == -32800
    assert cancel["params"] == {"id": request["id"]}


async def test_plugin_disconnect_fails_every_pending_call_at_once(shared: HostdProcess) -> None:
    p, _ = await plugin(shared, "leaving")
    async with await shared.connect_control() as ctl:
        calls = [
            asyncio.ensure_future(ctl.call("hostd.invoke", {"plugin_id": "leaving", "method": f"m{i}"}, timeout=T))
            for i in range(3)
        ]
        for _ in calls:
            await next_request(p)
        await p.aclose()
        results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        assert isinstance(result, RpcError)
        assert (result.code, result.message) == (-32000, "plugin disconnected")


async def test_hostd_request_ids_cannot_collide_with_the_plugins_own(hp: HostdProcess) -> None:
    p, session = await plugin(hp, "ids")
    async with p, await hp.connect_control() as ctl:
        first = asyncio.ensure_future(ctl.call("hostd.invoke", {"plugin_id": "ids", "method": "a"}, timeout=T))
        second = asyncio.ensure_future(ctl.call("hostd.invoke", {"plugin_id": "ids", "method": "b"}, timeout=T))
        req_a = await next_request(p, "a")
        req_b = await next_request(p, "b")
        assert re.fullmatch(r"hostd-\d+", req_a["id"]) and re.fullmatch(r"hostd-\d+", req_b["id"])
        assert req_a["id"] != req_b["id"]
        # The plugin reuses hostd's id for a request of its own: it is a request, not an answer.
        hello = await raw_call(p, req_a["id"], "hostd.hello", {})
        assert (await asyncio.wait_for(hello, T))["session"] == session
        # An answer nobody asked for is dropped and the session goes on.
        await p.send({"jsonrpc": "2.0", "id": "hostd-999999", "result": {"stray": True}})
        await hp.wait_log('"unmatched answer dropped"')
        await p.send({"jsonrpc": "2.0", "id": req_b["id"], "result": "for b"})
        await p.send({"jsonrpc": "2.0", "id": req_a["id"], "result": "for a"})
        assert await first == {"result": "for a"}
        assert await second == {"result": "for b"}


async def test_callback_scope_is_bound_to_the_invoked_session_until_the_call_returns(hp: HostdProcess) -> None:
    p, _ = await plugin(hp, "scoped")
    other, _ = await plugin(hp, "other")
    async with p, other, await hp.connect_control() as ctl:
        call = asyncio.ensure_future(
            ctl.call(
                "hostd.invoke",
                {"plugin_id": "scoped", "method": "run", "request_id": "req-42"},
                timeout=T,
            )
        )
        request = await next_request(p, "run")
        scope = request["params"]["host_callback_id"]
        with pytest.raises(RpcError) as foreign:
            await other.call("host.log", {"message": "x", "host_callback_id": scope}, timeout=T)
        assert await p.call("host.log", {"message": "nested in scope", "host_callback_id": scope}, timeout=T) == {}
        line = orjson.loads(await hp.wait_log('"nested in scope"'))
        await p.send({"jsonrpc": "2.0", "id": request["id"], "result": {}})
        assert await call == {"result": {}}
        # Ended: not open for any session, so it is simply ignored on host.log.
        assert await other.call("host.log", {"message": "after", "host_callback_id": scope}, timeout=T) == {}
    assert foreign.value.code == -32002
    assert foreign.value.message == "host callback ID does not belong to the calling plugin"
    assert line["request_id"] == "req-42"


async def test_plugin_result_with_raw_newlines_in_whitespace_stays_one_line(shared: HostdProcess) -> None:
    p, _ = await plugin(shared, "pretty")
    async with p, await shared.connect_control() as ctl:
        call = asyncio.ensure_future(ctl.call("hostd.invoke", {"plugin_id": "pretty", "method": "m"}, timeout=T))
        request = await next_request(p, "m")
        rid = orjson.dumps(request["id"])
        await p.send_raw(b'{"jsonrpc":"2.0","id":' + rid + b',"result":{"a": "x\\ny",\r"b": [1,\t2]}}\n')
        assert await call == {"result": {"a": "x\ny", "b": [1, 2]}}


# hostd.stream.* edge cases (the emit bridge itself is in tests/test_emit.py) ---------------


async def test_stream_read_of_an_unknown_id_is_done_and_close_always_succeeds(shared: HostdProcess) -> None:
    async with await shared.connect_control() as ctl:
        assert await ctl.call("hostd.stream.read", {"stream_id": "nope"}, timeout=T) == {
            "payload": None,
            "error": "",
            "done": True,
        }
        assert await ctl.call("hostd.stream.close", {"stream_id": "nope"}, timeout=T) == {}
        # Ids are compared exactly as sent: " " is an unknown id, only "" is missing.
        assert (await ctl.call("hostd.stream.read", {"stream_id": " "}, timeout=T))["done"] is True
        with pytest.raises(RpcError) as empty:
            await ctl.call("hostd.stream.read", {"stream_id": ""}, timeout=T)
        with pytest.raises(RpcError) as bad:
            await ctl.call("hostd.stream.read", {"stream_id": 5}, timeout=T)
    assert (empty.value.code, empty.value.message) == (-32000, "stream id is required")
    assert bad.value.code == -32602
    assert bad.value.message == "decode hostd.stream.read request: Expected `str`, got `int` - at `$.stream_id`"
