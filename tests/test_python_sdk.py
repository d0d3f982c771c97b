"""The Python SDK (plugins/python/hostd_plugin.py) against a real hostd.

Each test runs a :class:`hostd_plugin.Plugin` in the test's event loop, connected to a real
hostd process over its plugin socket, and drives it from hostd's control socket with
``hostd.invoke`` as the proxy would: real sockets, a real upstream and a real fake proxy on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hostd.client import Client
from hostd.client import RpcError as ClientRpcError
from tests.support.fake_proxy import FakeProxy, Sse, error, sse_event
from tests.support.hostd_proc import HostdProcess, running_hostd
from tests.support.upstream import Request, Response, Upstream

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "python"))

from hostd_plugin import Emitter, Plugin, RpcError, StreamError

from tests.support.helpers import read_emit_stream, unb64

pytestmark = pytest.mark.anyio
T = 10.0
DONE = {"payload": None, "error": "", "done": True}


@pytest.fixture
async def full(short_tmp: Path, proxy: FakeProxy) -> AsyncIterator[HostdProcess]:
    """hostd with a control socket, the fake proxy as its model backend and an auth directory."""
    auth = short_tmp / "auth"
    auth.mkdir()
    (auth / "claude-a.json").write_text('{"type": "claude", "email": "a@example.com"}')
    async with running_hostd(short_tmp, "--model-base-url", proxy.url, "--auth-dir", str(auth), control=True) as hp:
        yield hp


@contextlib.asynccontextmanager
async def serving(plugin: Plugin, hp: HostdProcess) -> AsyncIterator[Plugin]:
    """Run ``plugin`` on hostd's plugin socket until the block ends."""
    ready = asyncio.Event()
    task = asyncio.create_task(plugin.serve(f"unix:{hp.socket}", ready=ready.set))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiting}, timeout=T, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()  # raises why it could not start
    assert ready.is_set(), "the plugin's hello was not answered"
    try:
        yield plugin
    finally:
        plugin.stop()
        async with asyncio.timeout(T):
            await task


async def invoke(ctl: Client, plugin_id: str, method: str, params: dict[str, Any], stream: bool = False) -> Any:
    request = {"plugin_id": plugin_id, "method": method, "params": params, "stream": stream}
    return await ctl.call("hostd.invoke", request, timeout=T)


def text(read: dict[str, Any]) -> str | None:
    return None if read["payload"] is None else unb64(read["payload"]).decode()


# hello --------------------------------------------------------------------------------------


async def test_serve_says_hello_with_the_plugin_id(hp: HostdProcess) -> None:
    plugin = Plugin("sdk-hello")
    async with serving(plugin, hp), await hp.connect_control() as ctl:
        status = await ctl.call("hostd.status", {}, timeout=T)
    line = await hp.wait_log('"msg":"hello plugin"')
    assert [s["plugin_id"] for s in status["sessions"]] == ["sdk-hello"]
    assert plugin.hello["server"] == "hostd"
    assert plugin.hello["schema_version"] == 3
    assert plugin.hello["session"] == status["sessions"][0]["session"]
    assert '"plugin":"sdk-hello"' in line and '"schema_version":3' in line


# host -> plugin calls ------------------------------------------------------------------------


async def test_handlers_answer_and_errors_keep_their_code(hp: HostdProcess) -> None:
    plugin = Plugin("sdk-calls")

    @plugin.method("t.echo")
    async def echo(params: dict[str, Any]) -> dict[str, Any]:
        return {"got": params["x"], "scope_given": bool(params["host_callback_id"])}

    @plugin.method("t.nothing")
    async def nothing(params: dict[str, Any]) -> None:
        return None

    @plugin.method("t.refuse")
    async def refuse(params: dict[str, Any]) -> None:
        raise RpcError(-32099, "refused on purpose", {"why": "test"})

    @plugin.method("t.crash")
    async def crash(params: dict[str, Any]) -> None:
        raise ValueError("a bug in the plugin")

    async with serving(plugin, hp), await hp.connect_control() as ctl:
        echoed = await invoke(ctl, "sdk-calls", "t.echo", {"x": [1, "two"]})
        empty = await invoke(ctl, "sdk-calls", "t.nothing", {})
        errors = []
        for method in ("t.refuse", "t.crash", "t.unknown"):
            with pytest.raises(ClientRpcError) as failed:
                await invoke(ctl, "sdk-calls", method, {})
            errors.append(failed.value.error)
    assert echoed["result"] == {"got": [1, "two"], "scope_given": True}
    assert empty["result"] == {}
    assert errors == [
        {"code": -32099, "message": "refused on purpose", "data": {"why": "test"}},
        {"code": -32000, "message": "a bug in the plugin"},
        {"code": -32601, "message": "method not found: t.unknown"},
    ]


async def test_cancel_request_cancels_the_handler_task_and_the_plugin_keeps_serving(hp: HostdProcess) -> None:
    plugin = Plugin("sdk-cancel")
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @plugin.method("t.hang")
    async def hang(params: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @plugin.method("t.ping")
    async def ping(params: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True}

    async with serving(plugin, hp), await hp.connect_control() as ctl:
        rid = ctl.next_id()
        answer = ctl.expect(rid)
        request = {"plugin_id": "sdk-cancel", "method": "t.hang", "params": {}}
        await ctl.send({"jsonrpc": "2.0", "id": rid, "method": "hostd.invoke", "params": request})
        async with asyncio.timeout(T):
            await started.wait()
        await ctl.notify("$/cancelRequest", {"id": rid})  # hostd passes it on to the plugin
        with pytest.raises(ClientRpcError) as stopped:
            async with asyncio.timeout(T):
                await answer
        async with asyncio.timeout(T):
            await cancelled.wait()
        after = await invoke(ctl, "sdk-cancel", "t.ping", {})
    assert stopped.value.code == -32800
    assert after["result"] == {"pong": True}


async def test_an_invoke_that_times_out_cancels_the_handler(hp: HostdProcess) -> None:
    plugin = Plugin("sdk-timeout")
    cancelled = asyncio.Event()

    @plugin.method("t.hang")
    async def hang(params: dict[str, Any]) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serving(plugin, hp), await hp.connect_control() as ctl:
        request = {"plugin_id": "sdk-timeout", "method": "t.hang", "params": {}, "timeout_s": 0.2}
        with pytest.raises(ClientRpcError) as timed_out:
            await ctl.call("hostd.invoke", request, timeout=T)
        async with asyncio.timeout(T):
            await cancelled.wait()
    assert timed_out.value.message == "plugin call timed out"


# emit streams -------------------------------------------------------------------------------


async def test_stream_method_answers_first_then_emits_and_closes(hp: HostdProcess) -> None:
    plugin = Plugin("sdk-emit")

    @plugin.stream_method("executor.execute_stream")
    async def execute_stream(params: dict[str, Any], out: Emitter) -> None:
        for i in range(int(params["count"])):
            await out.emit(f"piece {i}".encode())

    async with serving(plugin, hp), await hp.connect_control() as ctl:
        answer = await invoke(ctl, "sdk-emit", "executor.execute_stream", {"count": 20}, stream=True)
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert answer["result"] == {}
    assert [text(r) for r in reads[:-1]] == [f"piece {i}" for i in range(20)]
    assert reads[-1] == DONE


async def test_a_stream_method_that_raises_closes_its_stream_with_the_error_text(hp: HostdProcess) -> None:
    plugin = Plugin("sdk-fail")

    @plugin.stream_method("executor.execute_stream")
    async def execute_stream(params: dict[str, Any], out: Emitter) -> None:
        await out.emit(b"first")
        raise RuntimeError("the model went away")

    async with serving(plugin, hp), await hp.connect_control() as ctl:
        answer = await invoke(ctl, "sdk-fail", "executor.execute_stream", {}, stream=True)
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert [text(r) for r in reads] == ["first", None]
    assert reads[-1] == {"payload": None, "error": "the model went away", "done": True}


async def test_a_produced_stream_whose_producer_raises_is_closed_not_left_open(hp: HostdProcess) -> None:
    """Regression: an exception in a spawned producer left hostd.stream.read waiting forever."""
    plugin = Plugin("sdk-produce")

    @plugin.method("t.stream")
    async def stream(params: dict[str, Any]) -> dict[str, Any]:
        async def producer(out: Emitter) -> None:
            raise KeyError("missing key")

        plugin.produce(params["stream_id"], producer)
        return {"accepted": True}

    async with serving(plugin, hp), await hp.connect_control() as ctl:
        answer = await invoke(ctl, "sdk-produce", "t.stream", {}, stream=True)
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert answer["result"] == {"accepted": True}
    assert reads == [{"payload": None, "error": "'missing key'", "done": True}]


async def test_stop_while_producing_closes_the_stream_as_cancelled(hp: HostdProcess) -> None:
    plugin = Plugin("sdk-stop")
    emitted = asyncio.Event()

    @plugin.stream_method("executor.execute_stream")
    async def execute_stream(params: dict[str, Any], out: Emitter) -> None:
        await out.emit(b"before stop")
        emitted.set()
        await asyncio.Event().wait()

    async with await hp.connect_control() as ctl:
        async with serving(plugin, hp):
            answer = await invoke(ctl, "sdk-stop", "executor.execute_stream", {}, stream=True)
            async with asyncio.timeout(T):
                await emitted.wait()
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert [text(r) for r in reads] == ["before stop", None]
    assert reads[-1]["error"] in ("cancelled", "plugin disconnected")  # whichever hostd saw first


# host.* helpers and their streams ---------------------------------------------------------


async def test_http_helpers_take_and_give_bytes_and_header_lists(hp: HostdProcess, upstream: Upstream) -> None:
    @upstream.route("/echo")
    async def echo(request: Request) -> Response:
        return Response(201, [("X-Seen", request.header("x-token") or "")], body=b"\x00got:" + request.body)

    plugin = Plugin("sdk-http")
    async with serving(plugin, hp):
        page = await plugin.http_do(
            upstream.url + "/echo", method="POST", headers={"X-Token": ["t1"]}, body=b"\xff\x01"
        )
    assert page.status_code == 201
    assert page.body == b"\x00got:\xff\x01"
    assert page.headers["X-Seen"] == ["t1"]


async def test_an_http_stream_is_closed_when_the_loop_breaks(hp: HostdProcess, upstream: Upstream) -> None:
    upstream.hold("/events", [b"data: 1\n\n"], release=asyncio.Event())  # never ends on its own
    plugin = Plugin("sdk-break")
    async with serving(plugin, hp):
        async with plugin.http_do_stream(upstream.url + "/events") as events:
            async for piece in events:
                assert piece == b"data: 1\n\n"
                break
        with pytest.raises(RpcError) as gone:
            await plugin.http_stream_read(events.stream_id)
        await upstream.wait_for(lambda: upstream.dropped == 1)

        # Without `async with`: leaving the loop still closes the stream.
        bare = await plugin.http_do_stream(upstream.url + "/events")
        async for _ in bare:
            break
        await upstream.wait_for(lambda: upstream.dropped == 2)
    assert events.status_code == 200 and events.headers["X-Stream"] == ["yes"]
    assert gone.value.message == f"http stream {events.stream_id} is not open"


async def test_model_helpers_and_a_model_stream_read_to_the_end(full: HostdProcess, proxy: FakeProxy) -> None:
    plugin = Plugin("sdk-model")
    body = json.dumps({"model": "m1", "messages": []}).encode()
    async with serving(plugin, full):
        answer = await plugin.model_execute("openai", "m1", body)
        async with plugin.model_execute_stream("openai", "m1", b'{"model": "m1", "stream": true}') as stream:
            pieces = [piece async for piece in stream]
        proxy.plan(error(429, "slow down"))
        with pytest.raises(RpcError) as refused:
            await plugin.model_execute("openai", "m1", body)
    assert answer.status_code == 200 and answer.json()["model"] == "m1"
    assert b"".join(pieces).count(b"data: ") == 4 and pieces[-1].endswith(b"data: [DONE]\n\n")
    assert stream.closed
    assert (refused.value.message, refused.value.http_status) == ("slow down", 429)
    assert proxy.received[0].header("X-CPA-Skip-Plugin") == "sdk-model"


async def test_a_model_stream_error_is_raised_and_a_cancelled_reader_closes_it(
    full: HostdProcess, proxy: FakeProxy
) -> None:
    plugin = Plugin("sdk-model-stream")
    never = asyncio.Event()
    proxy.plan(Sse([sse_event({"n": 1})], fail_after=1), Sse([sse_event({"n": 1}), b"x"], gates={1: never}))
    got_first = asyncio.Event()

    async def read_until_cancelled() -> None:
        async with plugin.model_execute_stream("openai", "m", b"{}") as stream:
            async for _ in stream:
                got_first.set()

    async with serving(plugin, full):
        with pytest.raises(StreamError):
            async for _ in await plugin.model_execute_stream("openai", "m", b"{}"):
                pass
        reader = asyncio.create_task(read_until_cancelled())
        async with asyncio.timeout(T):
            await got_first.wait()
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        exchange = await proxy.next_exchange(2)
        async with asyncio.timeout(T):
            await exchange.disconnected.wait()  # hostd dropped the upstream: the stream was closed
    assert exchange.events_sent == 1


async def test_auth_helpers_list_get_and_save_exact_bytes(full: HostdProcess, short_tmp: Path) -> None:
    plugin = Plugin("sdk-auth")
    raw = '{"type": "codex",  "email": "b@example.com", "n": 1.50}'
    async with serving(plugin, full):
        before = await plugin.auth_list()
        saved = await plugin.auth_save("codex-b.json", raw)
        after = await plugin.auth_list()
        got = await plugin.auth_get(after[1]["auth_index"])
        runtime = await plugin.auth_get_runtime(after[1]["auth_index"])
        with pytest.raises(RpcError) as bad:
            await plugin.auth_save("x.txt", {"type": "t"})
    assert [f["name"] for f in before] == ["claude-a.json"]
    assert [f["name"] for f in after] == ["claude-a.json", "codex-b.json"]
    assert saved.path == str(short_tmp / "auth" / "codex-b.json")
    assert (short_tmp / "auth" / "codex-b.json").read_text() == raw  # written as given, not re-serialised
    assert got.json == {"type": "codex", "email": "b@example.com", "n": 1.5}
    assert runtime["email"] == "b@example.com"
    assert bad.value.message == "auth file name must end with .json"


async def test_main_runs_once_connected_and_its_return_stops_the_plugin(hp: HostdProcess) -> None:
    seen: list[str] = []

    async def main(plugin: Plugin) -> None:
        await plugin.log("from main", fields={"api_key": "secret-value", "n": 1})
        seen.append(plugin.hello["session"])

    async with asyncio.timeout(T):
        await Plugin("sdk-main").serve(f"unix:{hp.socket}", main=main)
    line = await hp.wait_log('"msg":"from main"')
    assert seen and seen[0].startswith("session")
    assert '"plugin":"sdk-main"' in line and "secret-value" not in line
