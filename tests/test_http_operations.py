"""PROTOCOL.md §13 and §7 on ``host.http.*``: operations (open, claim, cancel in every phase),
the scope refusal of CLIProxyAPI v8, Transfer-Encoding, affinity and routing standalone.

Everything runs against a real hostd and real servers on 127.0.0.1. Scopes are real: a
control session invokes the test's plugin client, which holds the invoke open while the
test uses the ``host_callback_id`` it was given.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hostd.client import Client, RpcError
from hostd.operations import OperationRegistry, go_quote
from tests.support.helpers import error_of, scope_of
from tests.support.helpers import plugin as connect_plugin
from tests.support.hostd_proc import HostdProcess, running_hostd
from tests.support.loopback import LoopbackServer
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio
T = 10.0
PLUGIN = "ops-test"


async def open_op(c: Client, **params: Any) -> str:
    result = await c.call("host.http.operation_open", params, timeout=T)
    assert set(result) == {"operation_id"}
    op_id: str = result["operation_id"]
    return op_id


class HeldServer(LoopbackServer):
    """A raw HTTP server that reads a request head and then answers only what the test says,
    recording when the client hangs up."""

    def __init__(self) -> None:
        super().__init__()
        self.head = b""  # sent once the request head arrived (b"" = nothing: headers never come)
        self.got_request = asyncio.Event()
        self.disconnected = asyncio.Event()

    @property
    def url(self) -> str:
        return f"{super().url}/held"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.head:
                writer.write(self.head)
                await writer.drain()
            self.got_request.set()
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.disconnected.set()
            writer.close()


@pytest.fixture
async def held() -> AsyncIterator[HeldServer]:
    async with HeldServer() as srv:
        yield srv


@pytest.fixture
async def plugin(hp: HostdProcess) -> AsyncIterator[Client]:
    c, _ = await connect_plugin(hp, PLUGIN)
    async with c:
        yield c


# operation_open ------------------------------------------------------------------------


async def test_operation_open_returns_distinct_unguessable_ids(plugin: Client) -> None:
    ids = {await open_op(plugin) for _ in range(3)}
    assert len(ids) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


async def test_operation_open_with_a_scope_that_is_not_open_is_refused(plugin: Client) -> None:
    e = await error_of(plugin, "host.http.operation_open", {"host_callback_id": "never-issued"})
    assert (e.code, e.message) == (-32000, "host callback ID is not open")


async def test_operation_open_with_another_plugins_scope_is_forbidden(hp: HostdProcess, plugin: Client) -> None:
    async with scope_of(hp, plugin, PLUGIN) as scope, await hp.connect() as other:
        e = await error_of(other, "host.http.operation_open", {"host_callback_id": scope})
    assert (e.code, e.message) == (-32002, "host callback ID does not belong to the calling plugin")


async def test_operation_open_decode_error_names_the_method(plugin: Client) -> None:
    e = await error_of(plugin, "host.http.operation_open", {"host_callback_id": 7})
    assert e.code == -32602
    assert e.message.startswith("decode host http operation open request: ")


async def test_at_most_max_streams_unclaimed_operations_per_session(short_tmp: Path, upstream: Upstream) -> None:
    @upstream.route("/ok")
    async def ok(_: Request) -> Response:
        return Response(200, body=b"ok")

    async with running_hostd(short_tmp, "--max-streams", "2") as hp, await hp.connect() as c:
        first = await open_op(c)
        await open_op(c)
        e = await error_of(c, "host.http.operation_open", {})
        assert e.code == -32001
        async with await hp.connect() as other:  # the limit is per session
            await open_op(other)
        await c.call("host.http.do", {"url": upstream.url + "/ok", "operation_id": first}, timeout=T)
        await open_op(c)  # the claimed one no longer counts


# claims --------------------------------------------------------------------------------


async def test_claim_of_an_unknown_id_is_not_open_quoted_as_go_does(plugin: Client, upstream: Upstream) -> None:
    for method in ("host.http.do", "host.http.do_stream"):
        e = await error_of(plugin, method, {"url": upstream.url + "/", "operation_id": ' a"b\t '})
        assert (e.code, e.message) == (-32000, 'host http operation "a\\"b" is not open')
    assert upstream.requests == []


async def test_an_operation_is_single_use(plugin: Client, upstream: Upstream) -> None:
    @upstream.route("/ok")
    async def ok(_: Request) -> Response:
        return Response(200, body=b"ok")

    op = await open_op(plugin)
    assert (await plugin.call("host.http.do", {"url": upstream.url + "/ok", "operation_id": op}, timeout=T))[
        "StatusCode"
    ] == 200
    e = await error_of(plugin, "host.http.do", {"url": upstream.url + "/ok", "operation_id": op})
    assert e.message == f'host http operation "{op}" is not open'
    # After the call ended, a cancel is a no-op.
    assert await plugin.call("host.http.cancel", {"operation_id": op}, timeout=T) == {}
    assert len(upstream.requests) == 1


async def test_another_sessions_operation_is_not_open(hp: HostdProcess, plugin: Client, upstream: Upstream) -> None:
    op = await open_op(plugin)
    async with await hp.connect() as other:
        e = await error_of(other, "host.http.do", {"url": upstream.url + "/", "operation_id": op})
        assert e.message == f'host http operation "{op}" is not open'
        assert await other.call("host.http.cancel", {"operation_id": op}, timeout=T) == {}  # foreign: no-op
    # Untouched by the other session: the owner can still claim it.
    assert (await plugin.call("host.http.do", {"url": upstream.url + "/", "operation_id": op}, timeout=T))[
        "StatusCode"
    ] == 404


async def test_claim_with_a_different_scope_than_it_was_opened_with_is_not_open(
    hp: HostdProcess, plugin: Client, upstream: Upstream
) -> None:
    async with scope_of(hp, plugin, PLUGIN) as scope:
        unscoped = await open_op(plugin)
        scoped = await open_op(plugin, host_callback_id=scope)
        e = await error_of(
            plugin, "host.http.do", {"url": upstream.url + "/", "operation_id": unscoped, "host_callback_id": scope}
        )
        assert e.message == f'host http operation "{unscoped}" is not open'
        e = await error_of(plugin, "host.http.do", {"url": upstream.url + "/", "operation_id": scoped})
        assert e.message == f'host http operation "{scoped}" is not open'
        ok = await plugin.call(
            "host.http.do", {"url": upstream.url + "/", "operation_id": scoped, "host_callback_id": scope}, timeout=T
        )
        assert ok["StatusCode"] == 404
    assert len(upstream.requests) == 1


async def test_operations_end_with_their_scope(hp: HostdProcess, plugin: Client, upstream: Upstream) -> None:
    async with scope_of(hp, plugin, PLUGIN) as scope:
        op = await open_op(plugin, host_callback_id=scope)
    e = await error_of(
        plugin, "host.http.do", {"url": upstream.url + "/", "operation_id": op, "host_callback_id": scope}
    )
    assert e.message == f'host http operation "{op}" is not open'
    assert upstream.requests == []


async def test_a_call_in_flight_is_cancelled_when_its_operations_scope_ends(
    hp: HostdProcess, plugin: Client, held: HeldServer
) -> None:
    async with scope_of(hp, plugin, PLUGIN) as scope:
        op = await open_op(plugin, host_callback_id=scope)
        call = asyncio.ensure_future(
            plugin.call("host.http.do", {"url": held.url, "operation_id": op, "host_callback_id": scope}, timeout=T)
        )
        await asyncio.wait_for(held.got_request.wait(), T)
    with pytest.raises(RpcError) as e:
        await call
    assert e.value.message == "execute host http request: context canceled"
    await asyncio.wait_for(held.disconnected.wait(), T)


def test_registry_close_session_ends_only_that_sessions_operations() -> None:
    registry = OperationRegistry()
    mine = registry.open("session-1", "", None, limit=10)
    theirs = registry.open("session-2", "", None, limit=10)
    registry.close_session("session-1")
    assert mine.ended and mine.cancelled
    assert not theirs.ended
    assert len(registry) == 1
    with pytest.raises(Exception, match="is not open"):
        registry.claim(mine.id, "session-1", "")
    # The unclaimed count of an ended session is gone too: a new session of that id starts at zero.
    registry.open("session-1", "", None, limit=1)


def test_go_quote_matches_strconv_quote() -> None:
    assert go_quote("abc") == '"abc"'
    assert go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert go_quote("\n\t\x01\x7f") == '"\\n\\t\\x01\\x7f"'
    assert go_quote("héllo") == '"héllo"'
    assert go_quote("\u200b") == '"\\u200b"'


# cancel --------------------------------------------------------------------------------


async def test_cancel_errors_and_no_ops(plugin: Client) -> None:
    e = await error_of(plugin, "host.http.cancel", {"operation_id": "  "})
    assert (e.code, e.message) == (-32000, "host http operation id is required")
    e = await error_of(plugin, "host.http.cancel", {"operation_id": 5})
    assert e.code == -32602
    assert e.message.startswith("decode host http cancel request: ")
    assert await plugin.call("host.http.cancel", {"operation_id": "unknown"}, timeout=T) == {}
    # host_callback_id only identifies the caller: never checked, even when not open.
    assert await plugin.call("host.http.cancel", {"operation_id": "x", "host_callback_id": "nope"}, timeout=T) == {}


async def test_cancel_before_the_call_means_no_request_is_sent(plugin: Client, upstream: Upstream) -> None:
    op = await open_op(plugin)
    assert await plugin.call("host.http.cancel", {"operation_id": op}, timeout=T) == {}
    assert await plugin.call("host.http.cancel", {"operation_id": op}, timeout=T) == {}  # repeated: no-op
    for method in ("host.http.do", "host.http.do_stream"):
        e = await error_of(plugin, method, {"url": upstream.url + "/", "operation_id": op})
        assert e.message == f'host http operation "{op}" is not open'
    assert upstream.requests == []


@pytest.mark.parametrize("method", ["host.http.do", "host.http.do_stream"])
async def test_cancel_while_waiting_for_headers_aborts_the_upstream_request(
    plugin: Client, held: HeldServer, method: str
) -> None:
    op = await open_op(plugin)
    call = asyncio.ensure_future(plugin.call(method, {"url": held.url, "operation_id": op}, timeout=T))
    await asyncio.wait_for(held.got_request.wait(), T)
    assert await plugin.call("host.http.cancel", {"operation_id": op}, timeout=T) == {}
    with pytest.raises(RpcError) as e:
        await call
    assert (e.value.code, e.value.message) == (-32000, "execute host http request: context canceled")
    await asyncio.wait_for(held.disconnected.wait(), T)
    assert await plugin.call("host.log", {"message": "still serving"}, timeout=T) == {}


async def test_cancel_while_do_reads_the_body_fails_the_read(
    hp: HostdProcess, plugin: Client, held: HeldServer
) -> None:
    held.head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst ten!"  # then nothing more
    op = await open_op(plugin)
    call = asyncio.ensure_future(plugin.call("host.http.do", {"url": held.url, "operation_id": op}, timeout=T))
    await hp.wait_log('"msg":"http request"')  # logged once the headers arrived: the body is being read
    assert await plugin.call("host.http.cancel", {"operation_id": op}, timeout=T) == {}
    with pytest.raises(RpcError) as e:
        await call
    assert (e.value.code, e.value.message) == (-32000, "read host http response: context canceled")
    await asyncio.wait_for(held.disconnected.wait(), T)


async def test_cancel_after_do_stream_returned_ends_a_waiting_read(plugin: Client, upstream: Upstream) -> None:
    release = asyncio.Event()
    upstream.hold("/held", [], release)

    @upstream.route("/ok")
    async def ok(_: Request) -> Response:
        return Response(200, body=b"ok")

    op = await open_op(plugin)
    sid = (await plugin.call("host.http.do_stream", {"url": upstream.url + "/held", "operation_id": op}, timeout=T))[
        "stream_id"
    ]
    reading = asyncio.ensure_future(plugin.call("host.http.stream_read", {"stream_id": sid}, timeout=T))
    # A call that needs a task of its own, sent after the read: once it is answered, the
    # read's task has run up to its wait.
    await plugin.call("host.http.do", {"url": upstream.url + "/ok"}, timeout=T)
    assert not reading.done()
    assert await plugin.call("host.http.cancel", {"operation_id": op}, timeout=T) == {}
    assert await reading == {"error": "context canceled", "done": True}
    e = await error_of(plugin, "host.http.stream_read", {"stream_id": sid})
    assert e.message == f"http stream {sid} is not open"
    await upstream.wait_for(lambda: upstream.dropped == 1)  # the held answer's connection was dropped


async def test_a_do_stream_operation_ends_with_its_stream(plugin: Client, upstream: Upstream) -> None:
    @upstream.route("/short")
    async def short(_: Request) -> Response:
        return Response(200, body=b"all of it")

    op = await open_op(plugin)
    sid = (await plugin.call("host.http.do_stream", {"url": upstream.url + "/short", "operation_id": op}, timeout=T))[
        "stream_id"
    ]
    assert await plugin.call("host.http.stream_read", {"stream_id": sid}, timeout=T) == {"payload": "YWxsIG9mIGl0"}
    assert await plugin.call("host.http.stream_read", {"stream_id": sid}, timeout=T) == {"done": True}
    # The operation ended with its stream: cancelling it now is a no-op, and it cannot be claimed.
    assert await plugin.call("host.http.cancel", {"operation_id": op}, timeout=T) == {}
    e = await error_of(plugin, "host.http.do", {"url": upstream.url + "/short", "operation_id": op})
    assert e.message == f'host http operation "{op}" is not open'


# v8's scope refusal on host.http.do / do_stream ----------------------------------------


@pytest.mark.parametrize("method", ["host.http.do", "host.http.do_stream"])
async def test_a_scope_that_is_not_open_is_refused_before_any_request(
    hp: HostdProcess, plugin: Client, upstream: Upstream, method: str
) -> None:
    e = await error_of(plugin, method, {"url": upstream.url + "/", "host_callback_id": "never-issued"})
    assert (e.code, e.message) == (-32000, "host callback ID is not open")
    async with scope_of(hp, plugin, PLUGIN) as scope:
        pass
    e = await error_of(plugin, method, {"url": upstream.url + "/", "host_callback_id": scope})  # ended
    assert (e.code, e.message) == (-32000, "host callback ID is not open")
    assert upstream.requests == []


async def test_an_open_scope_is_accepted_on_do(hp: HostdProcess, plugin: Client, upstream: Upstream) -> None:
    async with scope_of(hp, plugin, PLUGIN) as scope:
        result = await plugin.call("host.http.do", {"url": upstream.url + "/", "host_callback_id": scope}, timeout=T)
    assert result["StatusCode"] == 404


# Transfer-Encoding ---------------------------------------------------------------------


async def test_transfer_encoding_is_never_in_result_headers(plugin: Client, upstream: Upstream) -> None:
    release = asyncio.Event()
    release.set()
    upstream.hold("/chunked", [b"abc"], release)  # sent with Transfer-Encoding: chunked
    done = await plugin.call("host.http.do", {"url": upstream.url + "/chunked"}, timeout=T)
    assert done["Headers"] == {"X-Stream": ["yes"]}
    opened = await plugin.call("host.http.do_stream", {"url": upstream.url + "/chunked"}, timeout=T)
    assert opened["headers"] == {"X-Stream": ["yes"]}
    assert await plugin.call("host.http.stream_read", {"stream_id": opened["stream_id"]}, timeout=T) == {
        "payload": "YWJj"
    }


# affinity and routing, standalone ------------------------------------------------------


async def test_affinity_lookup_standalone_is_unsupported_with_the_time_observed(plugin: Client) -> None:
    result = await plugin.call(
        "host.affinity.lookup", {"provider": "claude", "model": "m", "session_id": "s"}, timeout=T
    )
    assert set(result) == {"status", "observed_at"}
    assert result["status"] == "unsupported"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z", result["observed_at"]), result


async def test_affinity_lookup_errors_in_order(plugin: Client) -> None:
    e = await error_of(plugin, "host.affinity.lookup", {"provider": 1})
    assert e.code == -32602
    assert e.message.startswith("decode host affinity lookup request: ")
    for params, message in (
        ({"provider": " ", "model": "", "session_id": ""}, "provider is required"),
        ({"provider": "p", "model": " ", "session_id": ""}, "model is required"),
        ({"provider": "p", "model": "m", "session_id": "\t"}, "session_id is required"),
    ):
        e = await error_of(plugin, "host.affinity.lookup", params)
        assert (e.code, e.message) == (-32000, message)


async def test_routing_reset_cooldown_standalone_is_unsupported(plugin: Client) -> None:
    e = await error_of(plugin, "host.routing.reset_cooldown", {"auth_index": "abc"})
    assert (e.code, e.message) == (-32601, "unsupported host callback host.routing.reset_cooldown")


async def test_hello_lists_the_newer_methods_and_not_the_unsupported_one(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        methods = (await c.call("hostd.hello", {"plugin_id": "lister"}, timeout=T))["methods"]
    for name in ("host.http.operation_open", "host.http.cancel", "host.affinity.lookup"):
        assert name in methods
    assert "host.routing.reset_cooldown" not in methods
