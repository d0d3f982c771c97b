"""The stream bridge (PROTOCOL.md §9, §10): real plugin processes emit, the control side reads.

Plugins are separate processes on hostd's plugin socket: the example executor
(plugins/python/examples/executor.py) and tests/support/plugins/scripted.py, which
reports what its emits saw so a test can tell a waiting emit from a finished one.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from hostd.client import Client, RpcError
from tests.support.helpers import DONE, T, b64, read_emit_stream, scope_is_open
from tests.support.hostd_proc import HostdProcess, running_hostd
from tests.support.plugins import EXECUTOR, plugin_process

pytestmark = pytest.mark.anyio


async def invoke(ctl: Client, method: str, params: dict[str, Any], *, stream: bool = True) -> dict[str, Any]:
    request = {"plugin_id": "scripted", "method": method, "params": params, "stream": stream}
    answer: dict[str, Any] = await ctl.call("hostd.invoke", request, timeout=T)
    return answer


async def ask(ctl: Client, method: str, params: dict[str, Any]) -> Any:
    """A plain (non-streaming) invoke of the scripted plugin; returns its result."""
    return (await invoke(ctl, method, params, stream=False))["result"]


async def read(ctl: Client, stream_id: str) -> dict[str, Any]:
    result: dict[str, Any] = await ctl.call("hostd.stream.read", {"stream_id": stream_id}, timeout=T)
    return result


def payloads(reads: list[dict[str, Any]]) -> list[str]:
    return [base64.b64decode(r["payload"]).decode() for r in reads if r["payload"] is not None]


async def emit_counts(ctl: Client) -> dict[str, int]:
    status = await ctl.call("hostd.status", {}, timeout=T)
    return {s["plugin_id"]: s["streams"]["emit"] for s in status["sessions"]}


async def test_executor_plugin_streams_100_chunks_in_order_then_done(hp: HostdProcess) -> None:
    env = {**os.environ, "HOSTD_SOCKET": f"unix:{hp.socket}"}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(EXECUTOR), env=env)
    try:
        await hp.wait_log('"plugin":"example-executor"')
        async with await hp.connect_control() as ctl:
            answer = await ctl.call(
                "hostd.invoke",
                {
                    "plugin_id": "example-executor",
                    "method": "executor.execute_stream",
                    "params": {"prompt": "hi"},
                    "stream": True,
                },
                timeout=T,
            )
            assert answer["result"] == {"accepted": True}
            reads = await read_emit_stream(ctl, answer["stream_id"])
            after = await read(ctl, answer["stream_id"])
            counts = await emit_counts(ctl)
    finally:
        proc.kill()
        await proc.wait()
    assert payloads(reads) == [f"{i} hi\n" for i in range(100)]
    assert all(r["error"] == "" for r in reads)
    assert [r["done"] for r in reads] == [False] * 100 + [True]
    assert reads[-1] == DONE
    assert after == DONE
    assert counts == {"example-executor": 0}


async def test_seventeenth_emit_waits_while_the_session_keeps_serving(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl:
        answer = await invoke(ctl, "t.stream", {"count": 20})
        stream_id = answer["stream_id"]
        # Returns once emit 17 is sent and unanswered, after a hostd.hello on the same session.
        blocked = await ask(ctl, "t.wait_blocked", {"stream_id": stream_id, "n": 17})
        status = await ctl.call("hostd.status", {}, timeout=T)
        reads = await read_emit_stream(ctl, stream_id)
        producer = await ask(ctl, "t.producer", {"stream_id": stream_id})
    assert (blocked["sent"], blocked["answered"]) == (17, 16)
    [session] = status["sessions"]
    assert blocked["hello_session"] == session["session"]
    assert session["streams"]["emit"] == 1
    assert session["in_flight"] >= 1  # the waiting emit
    assert payloads(reads) == [f"chunk-{i}" for i in range(20)]
    assert producer == {"sent": 20, "answered": 20, "error": None, "done": True}


async def test_host_abort_drops_queued_chunks_and_fails_the_waiting_emit(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl:
        answer = await invoke(ctl, "t.stream", {"count": 20})
        stream_id, scope = answer["stream_id"], answer["result"]["host_callback_id"]
        await ask(ctl, "t.wait_blocked", {"stream_id": stream_id, "n": 17})
        assert await scope_is_open(hp, scope)
        assert await ctl.call("hostd.stream.close", {"stream_id": stream_id}, timeout=T) == {}
        producer = await ask(ctl, "t.producer", {"stream_id": stream_id})
        after = await read(ctl, stream_id)
        counts = await emit_counts(ctl)
        scope_open = await scope_is_open(hp, scope)
    assert producer["error"] == f"stream {stream_id} is not open"
    assert producer["answered"] == 16
    # The 16 queued chunks are gone; the abort is reported once, then the id is unknown.
    assert after == {"payload": None, "error": "aborted", "done": True}
    assert counts == {"scripted": 0}
    assert not scope_open


async def test_control_session_ending_first_aborts_its_streams(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl:
        async with await hp.connect_control() as invoker:
            answer = await invoke(invoker, "t.stream", {"count": 20})
            stream_id = answer["stream_id"]
            await ask(invoker, "t.wait_blocked", {"stream_id": stream_id, "n": 17})
        producer = await ask(ctl, "t.producer", {"stream_id": stream_id})
        counts = await emit_counts(ctl)
    assert producer["error"] == f"stream {stream_id} is not open"
    assert counts == {"scripted": 0}


async def test_inline_chunks_replace_what_was_emitted_and_end_the_stream(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl:
        answer = await invoke(ctl, "t.inline", {"emit_first": 2, "chunks": [["a"], ["b", "boom"], ["c"]]})
        reads = await read_emit_stream(ctl, answer["stream_id"])
        counts = await emit_counts(ctl)
    assert answer["result"] == {"ok": True}
    assert reads == [
        {"payload": b64("a"), "error": "", "done": False},
        {"payload": b64("b"), "error": "boom", "done": True},
    ]
    assert counts == {"scripted": 0}


async def test_inline_chunks_without_an_error_end_cleanly(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl:
        answer = await invoke(ctl, "t.inline", {"chunks": [["x"], ["y"]]})
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert payloads(reads) == ["x", "y"]
    assert reads[-1] == DONE


async def test_chunks_in_a_non_streaming_result_are_left_alone(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl:
        answer = await invoke(ctl, "t.inline", {"chunks": [["x"]]}, stream=False)
    assert answer == {"result": {"ok": True, "chunks": [{"Payload": b64("x")}]}}


async def test_plugin_crash_mid_stream_ends_it_with_plugin_disconnected(hp: HostdProcess) -> None:
    async with plugin_process(hp) as proc, await hp.connect_control() as ctl:
        answer = await invoke(ctl, "t.stream", {"count": 10, "crash_after": 3})
        stream_id, scope = answer["stream_id"], answer["result"]["host_callback_id"]
        assert await proc.wait() == 7
        reads = await read_emit_stream(ctl, stream_id)
        after = await read(ctl, stream_id)
        scope_open = await scope_is_open(hp, scope)
        status = await ctl.call("hostd.status", {}, timeout=T)
    assert payloads(reads) == ["chunk-0", "chunk-1", "chunk-2"]
    assert reads[-1] == {"payload": None, "error": "plugin disconnected", "done": True}
    assert after == DONE
    assert not scope_open
    assert [s for s in status["sessions"] if s["plugin_id"] == "scripted"] == []


async def test_plugin_that_closes_and_exits_at_once_loses_nothing(hp: HostdProcess) -> None:
    async with plugin_process(hp) as proc, await hp.connect_control() as ctl:
        answer = await invoke(ctl, "t.stream", {"count": 12, "exit_after_close": 0})
        assert await proc.wait() == 0
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert payloads(reads) == [f"chunk-{i}" for i in range(12)]
    assert reads[-1] == DONE


async def test_close_with_error_delivers_queued_chunks_then_the_error(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl:
        answer = await invoke(ctl, "t.stream", {"count": 3, "close_error": "upstream failed"})
        await ask(ctl, "t.producer", {"stream_id": answer["stream_id"]})  # closed before the first read
        reads = await read_emit_stream(ctl, answer["stream_id"])
        after = await read(ctl, answer["stream_id"])
    assert payloads(reads) == ["chunk-0", "chunk-1", "chunk-2"]
    assert reads[-1] == {"payload": None, "error": "upstream failed", "done": True}
    assert after == DONE


async def test_an_emitted_error_chunk_is_the_last_one(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl:
        answer = await invoke(ctl, "t.stream", {"count": 5, "error_at": 2})
        stream_id = answer["stream_id"]
        producer = await ask(ctl, "t.producer", {"stream_id": stream_id})
        reads = await read_emit_stream(ctl, stream_id)
        after = await read(ctl, stream_id)
    assert producer["error"] == f"stream {stream_id} is not open"  # the emit after the error chunk
    assert producer["answered"] == 3
    assert reads == [
        {"payload": b64("chunk-0"), "error": "", "done": False},
        {"payload": b64("chunk-1"), "error": "", "done": False},
        {"payload": b64("chunk-2"), "error": "emitted error", "done": True},
    ]
    assert after == DONE


async def test_only_the_invoking_control_session_can_read_or_close_the_stream(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl, await hp.connect_control() as other:
        answer = await invoke(ctl, "t.stream", {"count": 2})
        stream_id = answer["stream_id"]
        foreign_read = await read(other, stream_id)
        assert await other.call("hostd.stream.close", {"stream_id": stream_id}, timeout=T) == {}
        reads = await read_emit_stream(ctl, stream_id)
    assert foreign_read == DONE
    assert payloads(reads) == ["chunk-0", "chunk-1"]


async def test_another_plugin_session_cannot_emit_into_the_stream(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl, await hp.connect() as intruder:
        answer = await invoke(ctl, "t.stream", {"count": 1, "close": False})
        stream_id = answer["stream_id"]
        with pytest.raises(RpcError) as e:
            await intruder.call("host.stream.emit", {"stream_id": stream_id, "payload": b64("x")}, timeout=T)
        assert await intruder.call("host.stream.close", {"stream_id": stream_id}, timeout=T) == {}
        # The owner still can, and the intruder's close changed nothing.
        own = await ask(ctl, "t.emit", {"emit": {"stream_id": stream_id, "payload": b64("mine")}})
        first = await read(ctl, stream_id)
        second = await read(ctl, stream_id)
    assert (e.value.code, e.value.message) == (-32000, f"stream {stream_id} is not open")
    assert own == {"result": {}}
    assert payloads([first, second]) == ["chunk-0", "mine"]


async def test_emit_and_close_errors(hp: HostdProcess) -> None:
    async with await hp.connect() as p:
        with pytest.raises(RpcError) as empty:
            await p.call("host.stream.emit", {"stream_id": "", "payload": b64("x")}, timeout=T)
        with pytest.raises(RpcError) as unknown:
            await p.call("host.stream.emit", {"stream_id": "nope"}, timeout=T)
        with pytest.raises(RpcError) as bad_payload:
            await p.call("host.stream.emit", {"stream_id": "nope", "payload": "!!"}, timeout=T)
        with pytest.raises(RpcError) as bad_error:
            await p.call("host.stream.close", {"stream_id": "nope", "error": 1}, timeout=T)
        assert await p.call("host.stream.close", {"stream_id": "nope", "error": "x"}, timeout=T) == {}
        assert await p.call("host.stream.close", {}, timeout=T) == {}
    assert (empty.value.code, empty.value.message) == (-32000, "stream id is required")
    assert (unknown.value.code, unknown.value.message) == (-32000, "stream nope is not open")
    assert bad_payload.value.code == -32602
    assert bad_payload.value.message.startswith("decode stream emit request: ")
    assert "$.payload" in bad_payload.value.message
    assert bad_error.value.code == -32602
    assert bad_error.value.message == "decode stream close request: Expected `str`, got `int` - at `$.error`"


async def test_failed_streaming_invoke_closes_its_stream_and_scope(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl:
        with pytest.raises(RpcError) as e:
            await invoke(ctl, "t.fail", {"message": "no capacity"})
        counts = await emit_counts(ctl)
        status = await ctl.call("hostd.status", {}, timeout=T)
    assert e.value.message == "no capacity"
    assert counts == {"scripted": 0}
    assert status["totals"]["streams_opened"] == status["totals"]["streams_closed"] == 1


async def test_an_unread_emit_stream_is_reaped_when_idle(short_tmp: Path) -> None:
    async with (
        running_hostd(short_tmp, "--stream-idle-timeout", "0.3", control=True) as hp,
        plugin_process(hp),
        await hp.connect_control() as ctl,
    ):
        answer = await invoke(ctl, "t.stream", {"count": 20})
        stream_id = answer["stream_id"]
        reaped = await hp.wait_log('"idle stream reaped"')
        producer = await ask(ctl, "t.producer", {"stream_id": stream_id})
        after = await read(ctl, stream_id)
        scope_open = await scope_is_open(hp, answer["result"]["host_callback_id"])
    assert stream_id in reaped and '"kind":"emit"' in reaped
    assert producer["error"] == f"stream {stream_id} is not open"
    assert after == DONE
    assert not scope_open


async def test_idle_clock_starts_when_the_invoke_returns(short_tmp: Path) -> None:
    async with (
        running_hostd(short_tmp, "--stream-idle-timeout", "0.5", control=True) as hp,
        plugin_process(hp),
        await hp.connect_control() as ctl,
    ):
        # The plugin answers after three idle timeouts; the stream must still be there.
        answer = await invoke(ctl, "t.stream", {"count": 3, "answer_after_s": 1.5})
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert payloads(reads) == ["chunk-0", "chunk-1", "chunk-2"]
    assert reads[-1] == DONE
    assert not any('"idle stream reaped"' in line for line in hp.stderr_lines)
