"""Model streams and callback scopes (PROTOCOL.md §6-7) against a real hostd process.

Scopes are opened the way the host side opens them: a control connection sends
``hostd.invoke`` to a plugin connection (this test process, through :class:`hostd.client.Client`),
whose handler receives ``host_callback_id`` in its params and holds the call open while the
test makes ``host.model.*`` calls with it; the scope ends when the invoke returns (or, for a
streaming invoke, when its emit stream is finished). The proxy is the fake one on 127.0.0.1.
What hostd did is read from the outside: the proxy's records, ``hostd.status`` and hostd's
debug log (``stream closed`` lines carry the reason).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hostd.client import Client, RpcError
from tests.support.fake_proxy import FakeProxy, Sse, error, sse_event
from tests.support.helpers import (
    DONE,
    HeldScope,
    T,
    b64,
    error_of,
    hold_scope,
    plugin,
    read_emit_stream,
    scope_is_open,
    unb64,
)
from tests.support.hostd_proc import HostdProcess, running_hostd

pytestmark = pytest.mark.anyio

KEY = "sk-scope-test"
PLUGIN = "scoped-plugin"
STREAM_BODY = b64(orjson.dumps({"model": "gpt-test", "stream": True}))
PLAIN_BODY = b64(orjson.dumps({"model": "gpt-test"}))
SCOPE_ENDED = '"reason":"callback scope ended"'


@pytest.fixture
def proxy_api_key() -> str:
    return KEY


@pytest.fixture
async def scoped_hostd(short_tmp: Path, proxy: FakeProxy) -> AsyncIterator[HostdProcess]:
    async with running_hostd(
        short_tmp, "--model-base-url", proxy.url, control=True, env={"HOSTD_MODEL_API_KEY": KEY}
    ) as hp:
        yield hp


@pytest.fixture
async def ctl(scoped_hostd: HostdProcess) -> AsyncIterator[Client]:
    async with await scoped_hostd.connect_control() as c:
        yield c


@pytest.fixture
async def p(scoped_hostd: HostdProcess) -> AsyncIterator[Client]:
    client, _ = await plugin(scoped_hostd, PLUGIN)
    async with client:
        yield client


async def scope(ctl: Client, p: Client, plugin_id: str = PLUGIN, request_id: str | None = None) -> HeldScope:
    return await hold_scope(ctl, p, plugin_id, request_id=request_id)


async def execute_stream(p: Client, scope_id: str | None = None, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"entry_protocol": "openai", "stream": True, "body": STREAM_BODY, **extra}
    if scope_id is not None:
        params["host_callback_id"] = scope_id
    result: dict[str, Any] = await p.call("host.model.execute_stream", params, timeout=T)
    return result


async def read(p: Client, stream_id: str) -> dict[str, Any]:
    result: dict[str, Any] = await p.call("host.model.stream_read", {"stream_id": stream_id}, timeout=T)
    return result


async def model_streams(ctl: Client, plugin_id: str = PLUGIN) -> int:
    """How many model streams hostd holds open for the session of ``plugin_id``."""
    status = await ctl.call("hostd.status", {}, timeout=T)
    [session] = [s for s in status["sessions"] if s["plugin_id"] == plugin_id]
    count: int = session["streams"]["model"]
    return count


async def totals(ctl: Client) -> dict[str, int]:
    status = await ctl.call("hostd.status", {}, timeout=T)
    counts: dict[str, int] = status["totals"]
    return counts


async def closed_by_a_scope_end(hp: HostdProcess, p: Client) -> list[str]:
    """The ``stream closed`` lines whose reason is a scope's end, up to now: a log line the
    plugin writes now is waited for, and the log is one ordered stream."""
    marker = f"log sentinel {p.next_id()}"
    await p.call("host.log", {"message": marker}, timeout=T)
    await hp.wait_log(f'"{marker}"')
    upto = next(i for i, line in enumerate(hp.stderr_lines) if marker in line)
    return [line for line in hp.stderr_lines[:upto] if '"stream closed"' in line and SCOPE_ENDED in line]


# Under an open scope -------------------------------------------------------------------------


async def test_execute_under_an_open_scope_sends_its_id_and_the_skip_header(
    ctl: Client, p: Client, proxy: FakeProxy, scoped_hostd: HostdProcess
) -> None:
    held = await scope(ctl, p, request_id="req-7")
    params = {"entry_protocol": "claude", "body": PLAIN_BODY, "host_callback_id": held.id}
    result = await p.call("host.model.execute", params, timeout=T)
    assert result["status_code"] == 200
    [seen] = proxy.received
    assert seen.header("x-cpa-host-callback-id") == held.id
    assert seen.header("x-cpa-skip-plugin") == PLUGIN
    # A plain call leaves nothing open under the scope: its end closes nothing.
    assert await model_streams(ctl) == 0
    assert await held.end() == {"result": {}}
    assert await closed_by_a_scope_end(scoped_hostd, p) == []


async def test_execute_stream_under_an_open_scope_sends_its_id_and_is_closed_by_its_end(
    ctl: Client, p: Client, proxy: FakeProxy, scoped_hostd: HostdProcess
) -> None:
    held = await scope(ctl, p)
    proxy.plan(Sse([sse_event({"n": 1})], {0: asyncio.Event()}))  # the stream stays open
    result = await execute_stream(p, held.id)
    assert result["status_code"] == 200
    assert proxy.received[0].header("x-cpa-host-callback-id") == held.id
    assert proxy.received[0].header("x-cpa-skip-plugin") == PLUGIN
    assert await model_streams(ctl) == 1
    await held.end()
    [line] = await closed_by_a_scope_end(scoped_hostd, p)
    assert result["stream_id"] in line and '"kind":"model"' in line
    assert await model_streams(ctl) == 0


async def test_scope_end_closes_its_model_streams_and_cancels_the_proxy_but_not_others(
    ctl: Client, p: Client, proxy: FakeProxy
) -> None:
    held = await scope(ctl, p)
    gate = asyncio.Event()  # set only at the end, for the stream outside the scope
    events = [sse_event({"n": 1}), sse_event({"n": 2})]
    proxy.plan(Sse(events, {1: gate}), Sse(events, {1: gate}), Sse(events, {1: gate}))
    scoped = [await execute_stream(p, held.id), await execute_stream(p, held.id)]
    unscoped = await execute_stream(p)
    for result in [*scoped, unscoped]:
        first = await read(p, result["stream_id"])
        assert unb64(first["payload"]) == events[0]
    assert await model_streams(ctl) == 3
    await held.end()
    async with asyncio.timeout(T):
        await proxy.exchanges[0].disconnected.wait()
        await proxy.exchanges[1].disconnected.wait()
    assert await model_streams(ctl) == 1
    for result in scoped:
        assert await read(p, result["stream_id"]) == DONE
    # The stream opened without the scope is untouched.
    assert not proxy.exchanges[2].disconnected.is_set()
    gate.set()
    second = await read(p, unscoped["stream_id"])
    assert unb64(second["payload"]) == events[1]
    assert await read(p, unscoped["stream_id"]) == DONE


async def test_pending_read_sees_done_when_the_scope_ends(ctl: Client, p: Client, proxy: FakeProxy) -> None:
    held = await scope(ctl, p)
    proxy.plan(Sse([sse_event({"n": 1})], {0: asyncio.Event()}))  # no event ever comes
    result = await execute_stream(p, held.id)
    pending = asyncio.ensure_future(read(p, result["stream_id"]))
    await p.call("hostd.hello", {}, timeout=T)  # sent after the read: the read is under way
    status = await ctl.call("hostd.status", {}, timeout=T)
    [session] = [s for s in status["sessions"] if s["plugin_id"] == PLUGIN]
    assert session["in_flight"] == 1  # the read, waiting for a piece
    assert not pending.done()
    await held.end()
    async with asyncio.timeout(T):
        assert await pending == DONE


async def test_a_stream_that_ends_first_leaves_nothing_for_the_scope_end(
    ctl: Client, p: Client, proxy: FakeProxy, scoped_hostd: HostdProcess
) -> None:
    held = await scope(ctl, p)
    closed = await execute_stream(p, held.id)
    finished = await execute_stream(p, held.id)
    assert await model_streams(ctl) == 2
    assert await p.call("host.model.stream_close", {"stream_id": closed["stream_id"]}, timeout=T) == {}
    while not (await read(p, finished["stream_id"]))["done"]:
        pass
    proxy.plan(error(500, "boom"))
    e = await error_of(
        p, "host.model.execute_stream", {"entry_protocol": "openai", "stream": True, "host_callback_id": held.id}
    )
    assert e.message == "boom"
    assert await model_streams(ctl) == 0
    await held.end()
    assert await closed_by_a_scope_end(scoped_hostd, p) == []  # nothing left to close
    counts = await totals(ctl)
    assert counts["streams_opened"] == counts["streams_closed"]


async def test_scope_end_before_the_proxy_answers_gives_a_finished_stream(
    ctl: Client, p: Client, proxy: FakeProxy
) -> None:
    held = await scope(ctl, p)
    proxy.plan(Sse([sse_event({"n": 1})], head_gate=asyncio.Event()))  # the proxy never answers
    call = asyncio.ensure_future(execute_stream(p, held.id))
    exchange = await proxy.next_exchange()
    await held.end()
    async with asyncio.timeout(T):
        result = await call
        await exchange.disconnected.wait()
    assert result == {"status_code": 0, "headers": None, "stream_id": result["stream_id"]}
    assert await read(p, result["stream_id"]) == DONE


async def test_streaming_invoke_scope_ends_when_its_emit_stream_is_read_to_the_end(
    ctl: Client, p: Client, proxy: FakeProxy, scoped_hostd: HostdProcess
) -> None:
    held = await hold_scope(ctl, p, PLUGIN, stream=True)
    emit_id = held.params["stream_id"]
    answer = await held.end()
    assert answer == {"result": {}, "stream_id": emit_id}
    # The invoke has returned, but its stream is not finished: the scope is still open.
    assert await scope_is_open(scoped_hostd, held.id)
    proxy.plan(Sse([sse_event({"n": 1})], {0: asyncio.Event()}))
    model = await execute_stream(p, held.id)
    assert proxy.received[0].header("x-cpa-host-callback-id") == held.id
    assert await p.call("host.stream.close", {"stream_id": emit_id}, timeout=T) == {}
    assert await read_emit_stream(ctl, emit_id) == [DONE]
    async with asyncio.timeout(T):
        await proxy.exchanges[0].disconnected.wait()
    [line] = await closed_by_a_scope_end(scoped_hostd, p)
    assert model["stream_id"] in line
    assert not await scope_is_open(scoped_hostd, held.id)
    assert await read(p, model["stream_id"]) == DONE


# A scope that is not open ------------------------------------------------------------------------


async def test_ended_scope_on_execute_stream_gives_a_finished_stream_without_calling_the_proxy(
    ctl: Client, p: Client, proxy: FakeProxy
) -> None:
    held = await scope(ctl, p)
    await held.end()
    result = await execute_stream(p, held.id)
    assert result == {"status_code": 0, "headers": None, "stream_id": result["stream_id"]}
    assert await model_streams(ctl) == 1  # opened, and already finished
    assert await read(p, result["stream_id"]) == DONE
    assert await model_streams(ctl) == 0
    assert proxy.received == []


async def test_never_issued_scope_on_execute_stream_gives_a_finished_stream(
    ctl: Client, p: Client, proxy: FakeProxy
) -> None:
    result = await execute_stream(p, "0" * 32)
    assert result == {"status_code": 0, "headers": None, "stream_id": result["stream_id"]}
    assert await read(p, result["stream_id"]) == DONE
    assert proxy.received == []


async def test_ended_scope_on_execute_runs_without_a_scope(ctl: Client, p: Client, proxy: FakeProxy) -> None:
    held = await scope(ctl, p)
    await held.end()
    params = {"entry_protocol": "openai", "body": PLAIN_BODY, "host_callback_id": held.id}
    assert (await p.call("host.model.execute", params, timeout=T))["status_code"] == 200
    [seen] = proxy.received
    assert seen.header("x-cpa-host-callback-id") is None
    assert seen.header("x-cpa-skip-plugin") == PLUGIN


# Another session's scope ---------------------------------------------------------------------------


async def test_a_scope_of_another_session_is_refused_on_both_execute_methods(
    ctl: Client, p: Client, proxy: FakeProxy, scoped_hostd: HostdProcess
) -> None:
    other, _ = await plugin(scoped_hostd, "other-plugin")
    async with other:
        held = await scope(ctl, other, "other-plugin")
        calls: dict[str, dict[str, Any]] = {
            "host.model.execute": {"entry_protocol": "openai", "body": PLAIN_BODY},
            "host.model.execute_stream": {"entry_protocol": "openai", "stream": True, "body": STREAM_BODY},
        }
        for method, params in calls.items():
            e = await error_of(p, method, {**params, "host_callback_id": held.id})
            assert (e.code, e.message) == (-32002, "host callback ID does not belong to the calling plugin"), method
            assert e.data == {"code": "forbidden"}
        # stream_read and stream_close define no host_callback_id (§7): the key is ignored there.
        assert await p.call("host.model.stream_read", {"stream_id": "x", "host_callback_id": held.id}) == DONE
        assert await p.call("host.model.stream_close", {"stream_id": "x", "host_callback_id": held.id}) == {}
        assert proxy.received == []
        assert await model_streams(ctl) == 0
        # Its own session may use it.
        proxy.plan(Sse([sse_event({"n": 1})], {0: asyncio.Event()}))
        result = await execute_stream(other, held.id)
        assert proxy.received[0].header("x-cpa-host-callback-id") == held.id
        assert proxy.received[0].header("x-cpa-skip-plugin") == "other-plugin"
        assert await model_streams(ctl, "other-plugin") == 1
        await held.end()
        [line] = await closed_by_a_scope_end(scoped_hostd, other)
        assert result["stream_id"] in line


# Errors and session end ----------------------------------------------------------------------------


async def test_proxy_error_on_execute_stream_under_a_scope_opens_no_stream(
    ctl: Client, p: Client, proxy: FakeProxy
) -> None:
    held = await scope(ctl, p)
    proxy.plan(error(503, "no capacity", "server_error"))
    e = await error_of(
        p, "host.model.execute_stream", {"entry_protocol": "openai", "stream": True, "host_callback_id": held.id}
    )
    assert (e.message, e.data.get("http_status")) == ("no capacity", 503)
    assert await model_streams(ctl) == 0
    counts = await totals(ctl)
    assert counts["streams_opened"] == counts["streams_closed"]
    await held.end()


async def test_session_end_closes_its_model_streams_and_scopes(
    ctl: Client, p: Client, proxy: FakeProxy, scoped_hostd: HostdProcess
) -> None:
    held = await scope(ctl, p)
    proxy.plan(Sse([sse_event({"n": 1})], {0: asyncio.Event()}))
    await execute_stream(p, held.id)
    assert await scope_is_open(scoped_hostd, held.id)
    await p.aclose()
    with pytest.raises(RpcError) as gone:
        async with asyncio.timeout(T):
            await held.invoke
    assert (gone.value.code, gone.value.message) == (-32000, "plugin disconnected")
    async with asyncio.timeout(T):
        await proxy.exchanges[0].disconnected.wait()
    await scoped_hostd.wait_log('"session closed"', f'"plugin":"{PLUGIN}"')
    assert not await scope_is_open(scoped_hostd, held.id)
    status = await ctl.call("hostd.status", {}, timeout=T)
    assert [s for s in status["sessions"] if s["plugin_id"] == PLUGIN] == []
    assert status["totals"]["streams_opened"] == status["totals"]["streams_closed"] == 1
