"""Model streams and callback scopes (PROTOCOL.md §6-7), driven in-process.

Scopes are opened by ``hostd.invoke`` on the control socket; until that exists these tests
open and close them on the daemon's real :class:`ScopeRegistry`. Everything else is real:
the services ``hostd serve`` builds, a :class:`Session` on one end of a Unix socketpair,
the hostd client on the other, and the fake proxy on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from hostd.client import MAX_LINE, Client, RpcError
from hostd.config import load_config
from hostd.handlers import plugin_methods
from hostd.logs import Logger
from hostd.rpc.session import Session
from hostd.scopes import Scope
from hostd.server import build_services
from hostd.services import Services
from hostd.transports import SessionProtocol
from tests.support.fake_proxy import FakeProxy, Sse, error, sse_event

pytestmark = pytest.mark.anyio

KEY = "sk-scope-test"
STREAM_BODY = base64.b64encode(orjson.dumps({"model": "gpt-test", "stream": True})).decode()
PLAIN_BODY = base64.b64encode(orjson.dumps({"model": "gpt-test"})).decode()
DONE = {"payload": None, "error": "", "done": True}


@dataclass
class Plugin:
    session: Session
    client: Client
    task: asyncio.Task[None]

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        return await self.client.call(method, params, timeout=5)

    async def error(self, method: str, params: dict[str, Any]) -> RpcError:
        with pytest.raises(RpcError) as e:
            await self.call(method, params)
        return e.value

    async def execute_stream(self, scope: Scope | str | None = None, **extra: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"entry_protocol": "openai", "stream": True, "body": STREAM_BODY, **extra}
        if scope is not None:
            params["host_callback_id"] = scope if isinstance(scope, str) else scope.id
        result: dict[str, Any] = await self.call("host.model.execute_stream", params)
        return result

    async def read(self, stream_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("host.model.stream_read", {"stream_id": stream_id})
        return result

    async def disconnect(self) -> None:
        await self.client.aclose()
        async with asyncio.timeout(10):
            await self.task


@dataclass
class InProcessHostd:
    services: Services
    plugins: list[Plugin] = field(default_factory=list)

    async def connect(self, plugin_id: str) -> Plugin:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        session = Session(self.services, plugin_methods(), name=plugin_id)
        transport, _ = await loop.create_unix_connection(lambda: SessionProtocol(session), sock=ours)
        session.attach(transport, transport)
        task = asyncio.create_task(session.run(), name=session.id)
        reader, writer = await asyncio.open_unix_connection(sock=theirs, limit=MAX_LINE)
        plugin = Plugin(session, Client(reader, writer), task)
        self.plugins.append(plugin)
        return plugin

    def open_scope(self, plugin: Plugin, request_id: str | None = None) -> Scope:
        return self.services.scopes.open(plugin.session.id, request_id)

    def end_scope(self, scope: Scope) -> None:
        self.services.scopes.close(scope)


@pytest.fixture
async def proxy() -> AsyncIterator[FakeProxy]:
    server = await FakeProxy(api_key=KEY).start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def daemon(proxy: FakeProxy) -> AsyncIterator[InProcessHostd]:
    config = load_config(overrides={"model.base_url": proxy.url, "model.api_key": KEY, "auth.dir": ""}, environ={})
    logger = Logger("warn")
    services = build_services(config, logger)
    hostd = InProcessHostd(services)
    try:
        yield hostd
    finally:
        for plugin in hostd.plugins:
            await plugin.disconnect()
        await services.http.aclose()
        await services.model.aclose()
        logger.flush()


@pytest.fixture
async def plugin(daemon: InProcessHostd) -> Plugin:
    return await daemon.connect("scoped-plugin")


async def test_execute_under_an_open_scope_sends_its_id(
    daemon: InProcessHostd, plugin: Plugin, proxy: FakeProxy
) -> None:
    scope = daemon.open_scope(plugin, "req-7")
    params = {"entry_protocol": "claude", "body": PLAIN_BODY, "host_callback_id": scope.id}
    result = await plugin.call("host.model.execute", params)
    assert result["status_code"] == 200
    seen = proxy.received[0]
    assert seen.header("x-cpa-host-callback-id") == scope.id
    assert seen.header("x-cpa-skip-plugin") == "scoped-plugin"
    assert scope.on_close == []  # a plain call registers nothing on the scope


async def test_execute_stream_under_an_open_scope_sends_its_id_and_binds_the_stream(
    daemon: InProcessHostd, plugin: Plugin, proxy: FakeProxy
) -> None:
    scope = daemon.open_scope(plugin)
    result = await plugin.execute_stream(scope)
    assert proxy.received[0].header("x-cpa-host-callback-id") == scope.id
    stream = plugin.session.streams[result["stream_id"]]
    assert stream.kind == "model"
    assert stream.scope_id == scope.id
    assert len(scope.on_close) == 1


async def test_scope_end_closes_its_model_streams_and_cancels_the_proxy(
    daemon: InProcessHostd, plugin: Plugin, proxy: FakeProxy
) -> None:
    scope = daemon.open_scope(plugin)
    gate = asyncio.Event()  # set only at the end, for the stream outside the scope
    events = [sse_event({"n": 1}), sse_event({"n": 2})]
    proxy.plan(Sse(events, {1: gate}), Sse(events, {1: gate}), Sse(events, {1: gate}))
    scoped = [await plugin.execute_stream(scope), await plugin.execute_stream(scope)]
    unscoped = await plugin.execute_stream()
    for result in [*scoped, unscoped]:
        first = await plugin.read(result["stream_id"])
        assert base64.b64decode(first["payload"]) == events[0]
    daemon.end_scope(scope)
    async with asyncio.timeout(5):
        await proxy.exchanges[0].disconnected.wait()
        await proxy.exchanges[1].disconnected.wait()
    for result in scoped:
        assert result["stream_id"] not in plugin.session.streams
        assert await plugin.read(result["stream_id"]) == DONE
    # The stream opened without the scope is untouched.
    assert not proxy.exchanges[2].disconnected.is_set()
    gate.set()
    second = await plugin.read(unscoped["stream_id"])
    assert base64.b64decode(second["payload"]) == events[1]
    assert await plugin.read(unscoped["stream_id"]) == DONE


async def test_pending_read_sees_done_when_the_scope_ends(
    daemon: InProcessHostd, plugin: Plugin, proxy: FakeProxy
) -> None:
    scope = daemon.open_scope(plugin)
    proxy.plan(Sse([sse_event({"n": 1})], {0: asyncio.Event()}))
    result = await plugin.execute_stream(scope)
    stream = plugin.session.streams[result["stream_id"]]
    pending = asyncio.ensure_future(plugin.read(result["stream_id"]))
    async with asyncio.timeout(5):
        while stream.reading == 0:  # the read has reached the stream's buffer
            await plugin.call("hostd.hello", {})
    daemon.end_scope(scope)
    assert await pending == DONE


async def test_a_stream_that_closes_first_leaves_nothing_on_the_scope(
    daemon: InProcessHostd, plugin: Plugin, proxy: FakeProxy
) -> None:
    scope = daemon.open_scope(plugin)
    closed = await plugin.execute_stream(scope)
    finished = await plugin.execute_stream(scope)
    assert len(scope.on_close) == 2
    assert await plugin.call("host.model.stream_close", {"stream_id": closed["stream_id"]}) == {}
    assert len(scope.on_close) == 1
    while not (await plugin.read(finished["stream_id"]))["done"]:
        pass
    assert scope.on_close == []
    proxy.plan(error(500, "boom"))
    e = await plugin.error(
        "host.model.execute_stream", {"entry_protocol": "openai", "stream": True, "host_callback_id": scope.id}
    )
    assert e.message == "boom"
    assert scope.on_close == []
    assert plugin.session.streams == {}
    daemon.end_scope(scope)  # nothing left to run


async def test_scope_end_before_the_proxy_answers_gives_a_finished_stream(
    daemon: InProcessHostd, plugin: Plugin, proxy: FakeProxy
) -> None:
    scope = daemon.open_scope(plugin)
    proxy.plan(Sse([sse_event({"n": 1})], head_gate=asyncio.Event()))  # the proxy never answers
    call = asyncio.ensure_future(plugin.execute_stream(scope))
    exchange = await proxy.next_exchange()
    daemon.end_scope(scope)
    async with asyncio.timeout(5):
        result = await call
        await exchange.disconnected.wait()
    assert result == {"status_code": 0, "headers": None, "stream_id": result["stream_id"]}
    assert await plugin.read(result["stream_id"]) == DONE


async def test_ended_scope_on_execute_stream_does_not_call_the_proxy(
    daemon: InProcessHostd, plugin: Plugin, proxy: FakeProxy
) -> None:
    scope = daemon.open_scope(plugin)
    daemon.end_scope(scope)
    result = await plugin.execute_stream(scope)
    assert result == {"status_code": 0, "headers": None, "stream_id": result["stream_id"]}
    assert result["stream_id"] in plugin.session.streams  # opened, and already finished
    assert await plugin.read(result["stream_id"]) == DONE
    assert result["stream_id"] not in plugin.session.streams
    assert proxy.received == []


async def test_ended_scope_on_execute_runs_without_a_scope(
    daemon: InProcessHostd, plugin: Plugin, proxy: FakeProxy
) -> None:
    scope = daemon.open_scope(plugin)
    daemon.end_scope(scope)
    params = {"entry_protocol": "openai", "body": PLAIN_BODY, "host_callback_id": scope.id}
    assert (await plugin.call("host.model.execute", params))["status_code"] == 200
    assert proxy.received[0].header("x-cpa-host-callback-id") is None


async def test_a_scope_of_another_session_is_refused_on_both_execute_methods(
    daemon: InProcessHostd, plugin: Plugin, proxy: FakeProxy
) -> None:
    other = await daemon.connect("other-plugin")
    scope = daemon.open_scope(other)
    calls: dict[str, dict[str, Any]] = {
        "host.model.execute": {"entry_protocol": "openai", "body": PLAIN_BODY},
        "host.model.execute_stream": {"entry_protocol": "openai", "stream": True, "body": STREAM_BODY},
    }
    for method, params in calls.items():
        e = await plugin.error(method, {**params, "host_callback_id": scope.id})
        assert (e.code, e.message) == (-32002, "host callback ID does not belong to the calling plugin"), method
        assert e.data == {"code": "forbidden"}
    # stream_read and stream_close define no host_callback_id (§7): the key is ignored there.
    assert await plugin.call("host.model.stream_read", {"stream_id": "x", "host_callback_id": scope.id}) == DONE
    assert await plugin.call("host.model.stream_close", {"stream_id": "x", "host_callback_id": scope.id}) == {}
    assert proxy.received == []
    assert plugin.session.streams == {}
    # Its own session may use it.
    result = await other.execute_stream(scope)
    assert proxy.received[0].header("x-cpa-host-callback-id") == scope.id
    assert proxy.received[0].header("x-cpa-skip-plugin") == "other-plugin"
    assert other.session.streams[result["stream_id"]].scope_id == scope.id


async def test_proxy_error_on_execute_stream_opens_no_stream(
    daemon: InProcessHostd, plugin: Plugin, proxy: FakeProxy
) -> None:
    counters = daemon.services.counters
    proxy.plan(error(503, "no capacity", "server_error"))
    e = await plugin.error("host.model.execute_stream", {"entry_protocol": "openai", "stream": True})
    assert (e.message, e.data.get("http_status")) == ("no capacity", 503)
    assert plugin.session.streams == {}
    assert len(daemon.services.streams) == 0
    assert counters.streams_opened == counters.streams_closed


async def test_session_end_closes_its_model_streams_and_scopes(
    daemon: InProcessHostd, plugin: Plugin, proxy: FakeProxy
) -> None:
    scope = daemon.open_scope(plugin)
    proxy.plan(Sse([sse_event({"n": 1})], {0: asyncio.Event()}))
    await plugin.execute_stream(scope)
    await plugin.disconnect()
    async with asyncio.timeout(5):
        await proxy.exchanges[0].disconnected.wait()
    assert scope.closed
    assert len(daemon.services.streams) == 0
    assert len(daemon.services.scopes) == 0
