"""CLIProxyAPI's own ``internal/pluginhost/host_callbacks_test.go`` cases, as request/answer
pairs against a real hostd: each test is named after the Go test it mirrors.

The params are written exactly as Go's ``encoding/json`` marshals the SDK structs the Go
tests marshal: ``pluginapi.HTTPRequest`` has no JSON tags (so its keys are the Go field
names, and a nil ``http.Header`` or ``[]byte`` is ``null``); ``HostModelExecutionRequest``
has snake_case tags and no ``omitempty`` (so every field is present). Where the Go test
uses a fake in-process executor, the fake proxy on 127.0.0.1 plays its part.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hostd.client import Client
from tests.support.fake_proxy import FakeProxy, Json, Sse
from tests.support.helpers import b64, error_of, unb64
from tests.support.hostd_proc import HostdProcess, running_hostd
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio
T = 10.0
KEY = "sk-mirror-test"


def go_model_request(**fields: Any) -> dict[str, Any]:
    """``json.Marshal(pluginapi.HostModelExecutionRequest{...})``: every field, zero values included."""
    request: dict[str, Any] = {
        "entry_protocol": "",
        "exit_protocol": "",
        "model": "",
        "stream": False,
        "body": None,
        "headers": None,
        "query": None,
        "alt": "",
    }
    request.update(fields)
    return request


@pytest.fixture
def proxy_api_key() -> str:
    return KEY


@pytest.fixture
async def model_hostd(proxy: FakeProxy) -> AsyncIterator[HostdProcess]:
    with tempfile.TemporaryDirectory(prefix="hostd-", dir="/tmp") as tmp:
        async with running_hostd(Path(tmp), "--model-base-url", proxy.url, env={"HOSTD_MODEL_API_KEY": KEY}) as hp:
            yield hp


@pytest.fixture
async def origin(model_hostd: HostdProcess) -> AsyncIterator[Client]:
    async with await model_hostd.connect() as c:
        await c.call("hostd.hello", {"plugin_id": "origin-plugin", "schema_version": 3}, timeout=T)
        yield c


# host.http.* ---------------------------------------------------------------------------


async def test_TestHostHTTPDoCallbackUsesHostHTTPClient(hostd: HostdProcess, upstream: Upstream) -> None:
    @upstream.route("/")
    async def answer(req: Request) -> Response:
        assert req.method == "POST"
        return Response(200, [("X-Test", "ok")], b'{"ok":true}')

    # json.Marshal(pluginapi.HTTPRequest{Method: "POST", URL: server.URL, Body: []byte(`{"request":true}`)})
    request = {"Method": "POST", "URL": upstream.url, "Headers": None, "Body": b64(b'{"request":true}')}
    async with await hostd.connect() as c:
        result = await c.call("host.http.do", request, timeout=T)
    assert result["StatusCode"] == 200
    assert unb64(result["Body"]) == b'{"ok":true}'
    assert result["Headers"]["X-Test"] == ["ok"]
    assert upstream.requests[-1].body == b'{"request":true}'


async def test_TestHostHTTPDoStreamCallbackReturnsBeforeUpstreamCompletes(
    hostd: HostdProcess, upstream: Upstream
) -> None:
    release = asyncio.Event()
    upstream.hold("/", [b"first"], release, [b"second"])
    request = {"Method": "GET", "URL": upstream.url + "/", "Headers": None, "Body": None}
    async with await hostd.connect() as c:
        opened = await c.call("host.http.do_stream", request, timeout=T)  # returns while the upstream holds
        assert opened["stream_id"]
        chunk = await c.call("host.http.stream_read", {"stream_id": opened["stream_id"]}, timeout=T)
        assert chunk == {"payload": b64(b"first")}  # payload "first", not done, no error
        assert await c.call("host.http.stream_close", {"stream_id": opened["stream_id"]}, timeout=T) == {}
    release.set()


# host.model.* --------------------------------------------------------------------------


async def test_TestHostModelExecuteCallback(origin: Client, proxy: FakeProxy) -> None:
    proxy.plan(Json(b'{"response":true}', 202, [("Content-Type", "application/json"), ("X-Model", "ok")]))
    request = go_model_request(
        entry_protocol="openai",
        exit_protocol="claude",
        model="model-1",
        body=b64(b'{"request":true}'),
        headers={"X-Request": ["yes"]},
        query={"alt": ["sse"]},
        alt="raw",
    )
    result = await origin.call("host.model.execute", request, timeout=T)
    assert result["status_code"] == 202
    assert unb64(result["body"]) == b'{"response":true}'
    assert result["headers"]["X-Model"] == ["ok"]
    got = proxy.received[-1]
    assert got.path == "/v1/chat/completions"
    assert got.body == b'{"request":true}'
    assert got.header("X-Request") == "yes"
    assert got.query["alt"] == ["sse"]
    assert got.header("X-CPA-Exit-Protocol") == "claude"
    assert got.header("X-CPA-Alt") == "raw"


async def test_TestHostModelExecuteCallbackCarriesCallerPluginSkipID(origin: Client, proxy: FakeProxy) -> None:
    proxy.plan(Json(b'{"ok":true}'))
    request = go_model_request(
        entry_protocol="openai", exit_protocol="openai", model="model-1", body=b64(b'{"request":true}')
    )
    await origin.call("host.model.execute", request, timeout=T)
    assert proxy.received[-1].header("X-CPA-Skip-Plugin") == "origin-plugin"


async def test_TestHostModelCallbacksValidateStreamMode(origin: Client, proxy: FakeProxy) -> None:
    e = await error_of(
        origin,
        "host.model.execute",
        go_model_request(entry_protocol="openai", exit_protocol="openai", model="model-1", stream=True),
    )
    assert "host.model.execute requires stream=false" in e.message
    e = await error_of(
        origin,
        "host.model.execute_stream",
        go_model_request(entry_protocol="openai", exit_protocol="openai", model="model-1", stream=False),
    )
    assert "host.model.execute_stream requires stream=true" in e.message
    assert proxy.received == []


async def test_TestHostModelCallbacksRequireExecutor(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:  # this hostd has no model backend
        e = await error_of(
            c, "host.model.execute", go_model_request(entry_protocol="openai", exit_protocol="openai", model="model-1")
        )
        assert "host model executor is unavailable" in e.message
        e = await error_of(
            c,
            "host.model.execute_stream",
            go_model_request(entry_protocol="openai", exit_protocol="openai", model="model-1", stream=True),
        )
        assert "host model executor is unavailable" in e.message


async def test_TestHostModelStreamReadAndCloseValidateStreamID(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        e = await error_of(c, "host.model.stream_read", {"stream_id": ""})  # HostModelStreamReadRequest{}
        assert "model stream id is required" in e.message
        assert await c.call("host.model.stream_close", {"stream_id": ""}, timeout=T) == {}


async def test_TestHostModelStreamReadReturnsPayloadAndTerminalError(origin: Client, proxy: FakeProxy) -> None:
    """Go's fake executor sends a chunk, then a chunk carrying an error; through the proxy's HTTP
    API the same shape is an SSE body that breaks off after its first event."""
    proxy.plan(Sse([b"data: first\n\n", b"data: never\n\n"], fail_after=1))
    request = go_model_request(entry_protocol="openai", exit_protocol="openai", model="model-1", stream=True)
    opened = await origin.call("host.model.execute_stream", request, timeout=T)
    first = await origin.call("host.model.stream_read", {"stream_id": opened["stream_id"]}, timeout=T)
    assert first == {"payload": b64(b"data: first\n\n"), "error": "", "done": False}
    terminal = await origin.call("host.model.stream_read", {"stream_id": opened["stream_id"]}, timeout=T)
    assert terminal["done"] is True and terminal["error"] and terminal["payload"] is None


async def test_TestHostModelStreamExplicitCloseCancelsStream(origin: Client, proxy: FakeProxy) -> None:
    never = asyncio.Event()
    proxy.plan(Sse([b"data: a\n\n", b"data: b\n\n"], gates={1: never}))
    request = go_model_request(entry_protocol="openai", exit_protocol="openai", model="model-1", stream=True)
    opened = await origin.call("host.model.execute_stream", request, timeout=T)
    exchange = await proxy.next_exchange()
    assert await origin.call("host.model.stream_close", {"stream_id": opened["stream_id"]}, timeout=T) == {}
    await asyncio.wait_for(exchange.disconnected.wait(), T)  # the upstream request was cancelled
    done = await origin.call("host.model.stream_read", {"stream_id": opened["stream_id"]}, timeout=T)
    assert done == {"payload": None, "error": "", "done": True}


def test_go_marshal_of_the_sdk_structs_is_what_these_tests_send() -> None:
    """A guard on the helpers above: the shapes Go's encoding/json produces."""
    assert list(go_model_request()) == [
        "entry_protocol",
        "exit_protocol",
        "model",
        "stream",
        "body",
        "headers",
        "query",
        "alt",
    ]
    assert orjson.loads(orjson.dumps(go_model_request(body=b64(b"x"))))["body"] == "eA=="
