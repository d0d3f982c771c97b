"""``host.model.*`` end to end: a real hostd process, a real fake proxy on 127.0.0.1.

Everything here runs without a callback scope (scopes are opened by ``hostd.invoke``;
see ``test_model_scopes.py`` for the scope behaviour).
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hostd.client import Client, RpcError
from tests.support.fake_proxy import FakeProxy, Flood, Json, Sse, error, sse_event, text
from tests.support.helpers import b64, error_of, plugin, read_to_end, unb64
from tests.support.hostd_proc import HostdProcess, running_hostd

pytestmark = pytest.mark.anyio

KEY = "sk-proxy-test-key"
PLUGIN = "demo-plugin"
SUPPORTED = "openai, openai-response, claude, gemini"
OPENAI_BODY = orjson.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})
OPENAI_STREAM_BODY = orjson.dumps({"model": "gpt-test", "stream": True, "messages": []})


def execute_params(body: bytes = OPENAI_BODY, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"entry_protocol": "openai", "model": "gpt-test", "body": b64(body)}
    params.update(overrides)
    return params


def stream_params(body: bytes = OPENAI_STREAM_BODY, **overrides: Any) -> dict[str, Any]:
    return execute_params(body, stream=True, **overrides)


# One proxy and one hostd for the module (starting hostd dominates the run time); each test
# gets a fresh connection, so a fresh session, and a proxy with nothing recorded.


@pytest.fixture(scope="module")
async def shared_proxy() -> AsyncIterator[FakeProxy]:
    server = await FakeProxy(api_key=KEY).start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def proxy(shared_proxy: FakeProxy) -> FakeProxy:
    shared_proxy.reset()
    return shared_proxy


@pytest.fixture(scope="module")
async def model_hostd(shared_proxy: FakeProxy) -> AsyncIterator[HostdProcess]:
    with tempfile.TemporaryDirectory(prefix="hostd-", dir="/tmp") as tmp:
        async with running_hostd(
            Path(tmp), "--model-base-url", shared_proxy.url, env={"HOSTD_MODEL_API_KEY": KEY}
        ) as hp:
            yield hp


@pytest.fixture
async def client(model_hostd: HostdProcess) -> AsyncIterator[Client]:
    c, _ = await plugin(model_hostd, PLUGIN)
    async with c:
        yield c


async def read(client: Client, stream_id: str) -> dict[str, Any]:
    result: dict[str, Any] = await client.call("host.model.stream_read", {"stream_id": stream_id}, timeout=5)
    return result


async def read_all(client: Client, stream_id: str) -> tuple[bytes, dict[str, Any]]:
    """Every payload until the end, and the final read."""
    return await read_to_end(client, "host.model.stream_read", stream_id)


# host.model.execute ------------------------------------------------------------------------------


async def test_execute_returns_the_proxy_answer_with_all_keys(client: Client, proxy: FakeProxy) -> None:
    result = await client.call("host.model.execute", execute_params(), timeout=5)
    assert set(result) == {"status_code", "headers", "body"}
    assert result["status_code"] == 200
    assert result["headers"]["Content-Type"] == ["application/json"]
    assert result["headers"]["X-Fake-Proxy"] == ["1"]
    assert orjson.loads(unb64(result["body"]))["path"] == "/v1/chat/completions"


async def test_execute_sends_the_body_byte_for_byte(client: Client, proxy: FakeProxy) -> None:
    body = b'{"model":"gpt-test",  "messages":[],"x":"\xc3\xa9\\u00e9"}\n'
    await client.call("host.model.execute", execute_params(body), timeout=5)
    assert proxy.received[0].method == "POST"
    assert proxy.received[0].body == body


@pytest.mark.parametrize(
    ("protocol", "model", "path", "key_header"),
    [
        ("openai", "gpt-test", "/v1/chat/completions", None),
        ("openai-response", "gpt-test", "/v1/responses", None),
        ("claude", "claude-test", "/v1/messages", "x-api-key"),
        ("gemini", "gemini-2.5-pro", "/v1beta/models/gemini-2.5-pro:generateContent", "x-goog-api-key"),
    ],
)
async def test_entry_protocol_picks_the_endpoint_and_the_key_headers(
    client: Client, proxy: FakeProxy, protocol: str, model: str, path: str, key_header: str | None
) -> None:
    body = orjson.dumps({"model": model, "contents": []})
    result = await client.call(
        "host.model.execute", execute_params(body, entry_protocol=protocol, model=model), timeout=5
    )
    assert result["status_code"] == 200
    seen = proxy.received[0]
    assert seen.path == path
    assert seen.raw_query == ""
    assert seen.header_values("authorization") == [f"Bearer {KEY}"]
    for name in ("x-api-key", "x-goog-api-key"):
        assert seen.header_values(name) == ([KEY] if name == key_header else [])


async def test_gemini_stream_uses_stream_generate_content_with_alt_sse(client: Client, proxy: FakeProxy) -> None:
    params = stream_params(b"{}", entry_protocol="gemini", model="gemini-flash", query={"beta": ["1"]})
    result = await client.call("host.model.execute_stream", params, timeout=5)
    data, end = await read_all(client, result["stream_id"])
    seen = proxy.received[0]
    assert seen.path == "/v1beta/models/gemini-flash:streamGenerateContent"
    assert seen.raw_query == "alt=sse&beta=1"
    assert data.startswith(b"data: ")
    assert end == {"payload": None, "error": "", "done": True}


async def test_query_is_appended(client: Client, proxy: FakeProxy) -> None:
    query = {"beta": ["true"], "tag": ["a b", "c&d"]}
    await client.call("host.model.execute", execute_params(query=query), timeout=5)
    seen = proxy.received[0]
    assert seen.path == "/v1/chat/completions"
    assert seen.query == query


async def test_plugin_headers_are_forwarded_except_credentials_framing_hop_by_hop_and_x_cpa(
    client: Client, proxy: FakeProxy
) -> None:
    headers = {
        "Anthropic-Version": ["2023-06-01"],
        "X-Custom": ["one", "two"],
        "Content-Type": ["application/json; charset=utf-8"],
        "Authorization": ["Bearer plugin-secret"],
        "X-Api-Key": ["plugin-secret"],
        "x-goog-api-key": ["plugin-secret"],
        "Host": ["evil.example"],
        "Content-Length": ["999"],
        "Connection": ["keep-alive, X-Per-Hop"],
        "X-Per-Hop": ["dropped"],
        "Keep-Alive": ["timeout=5"],
        "Proxy-Authorization": ["Basic Zm9vOmJhcg=="],
        "TE": ["trailers"],
        "Upgrade": ["h2c"],
        "X-CPA-Skip-Plugin": ["someone-else"],
        "x-cpa-host-callback-id": ["forged"],
        "X-Cpa-Anything": ["forged"],
    }
    await client.call("host.model.execute", execute_params(headers=headers), timeout=5)
    seen = proxy.received[0]
    assert seen.header_values("anthropic-version") == ["2023-06-01"]
    assert seen.header_values("x-custom") == ["one", "two"]
    assert seen.header_values("content-type") == ["application/json; charset=utf-8"]
    assert seen.header_values("authorization") == [f"Bearer {KEY}"]
    assert seen.header_values("x-api-key") == []  # openai: only the bearer key
    assert seen.header_values("x-goog-api-key") == []
    assert seen.header_values("host") == [f"127.0.0.1:{proxy.port}"]
    assert seen.header_values("content-length") == [str(len(OPENAI_BODY))]
    for name in ("connection", "x-per-hop", "keep-alive", "proxy-authorization", "te", "upgrade"):
        assert seen.header_values(name) == [], name
    cpa = sorted((k.lower(), v) for k, v in seen.headers if k.lower().startswith("x-cpa-"))
    assert cpa == [("x-cpa-skip-plugin", PLUGIN)]


async def test_header_values_http_forbids_fail_without_calling_the_proxy(client: Client, proxy: FakeProxy) -> None:
    for headers in ({"X-Custom": ["a\r\nX-Injected: 1"]}, {"X-Custom": ["caf\u00e9 \u2615"]}, {"Bad Name": ["v"]}):
        e = await error_of(client, "host.model.execute", execute_params(headers=headers))
        assert e.message.startswith("model execution failed: invalid request: "), headers
        assert e.data == {"code": "host_call_failed", "http_status": 400}
    for name in ("exit_protocol", "alt", "auth_id", "forced_provider"):
        e = await error_of(client, "host.model.execute_stream", {**stream_params(), name: "x\ny"})
        assert e.data.get("http_status") == 400, name
    assert proxy.received == []


async def test_no_default_accept_encoding_is_added(client: Client, proxy: FakeProxy) -> None:
    await client.call("host.model.execute", execute_params(), timeout=5)
    assert proxy.received[0].header("accept-encoding") is None
    assert proxy.received[0].header("content-type") == "application/json"


async def test_skip_plugin_header_names_the_caller_without_hello(model_hostd: HostdProcess, proxy: FakeProxy) -> None:
    async with await model_hostd.connect() as c:
        await c.call("host.model.execute", execute_params(), timeout=5)
    skip = proxy.received[0].header("x-cpa-skip-plugin")
    assert skip is not None and skip.startswith("session-")


async def test_optional_params_travel_as_x_cpa_headers(client: Client, proxy: FakeProxy) -> None:
    params = execute_params(
        exit_protocol="claude",
        alt="sse",
        auth_id="claude-a.json",
        forced_provider="anthropic",
        proxy_url="socks5h://user:pw@proxy.internal:1080",
        path=" /v1/custom/route ",
    )
    await client.call("host.model.execute", params, timeout=5)
    seen = proxy.received[0]
    assert seen.header("x-cpa-skip-plugin") == PLUGIN
    assert seen.header("x-cpa-exit-protocol") == "claude"
    assert seen.header("x-cpa-alt") == "sse"
    assert seen.header("x-cpa-auth-id") == "claude-a.json"
    assert seen.header("x-cpa-forced-provider") == "anthropic"
    assert seen.header("x-cpa-proxy-url") == "socks5h://user:pw@proxy.internal:1080"
    assert seen.header("x-cpa-path") == "/v1/custom/route"  # the newer path field, trimmed
    assert seen.header("x-cpa-host-callback-id") is None


async def test_empty_optional_params_send_no_x_cpa_headers(client: Client, proxy: FakeProxy) -> None:
    params = execute_params(exit_protocol="", alt=" ", proxy_url="", path=" ")
    await client.call("host.model.execute", params, timeout=5)
    names = {n for n in proxy.received[0].header_names() if n.startswith("x-cpa-")}
    assert names == {"x-cpa-skip-plugin"}


async def test_execute_with_a_callback_id_that_is_not_open_runs_without_a_scope(
    client: Client, proxy: FakeProxy
) -> None:
    result = await client.call("host.model.execute", execute_params(host_callback_id="never-issued"), timeout=5)
    assert result["status_code"] == 200
    assert proxy.received[0].header("x-cpa-host-callback-id") is None


async def test_execute_with_an_empty_body_answer_returns_null_body(client: Client, proxy: FakeProxy) -> None:
    proxy.plan(Json(b"", 204, []))
    result = await client.call("host.model.execute", execute_params(), timeout=5)
    assert result == {"status_code": 204, "headers": None, "body": None}


# Check order ---------------------------------------------------------------------------------------


async def test_decode_errors_come_first_with_the_method_label(client: Client, proxy: FakeProxy) -> None:
    e = await error_of(client, "host.model.execute", {"stream": "yes", "entry_protocol": "nope"})
    assert e.code == -32602
    assert e.message.startswith("decode host model execution request: ")
    assert "$.stream" in e.message
    e = await error_of(client, "host.model.execute_stream", {"body": "!!not base64!!"})
    assert e.code == -32602
    assert e.message.startswith("decode host model execution stream request: ")
    assert "$.body" in e.message
    e = await error_of(client, "host.model.stream_read", {"stream_id": 7})
    assert e.message.startswith("decode host model stream read request: ")
    e = await error_of(client, "host.model.stream_close", {"stream_id": []})
    assert e.message.startswith("decode host model stream close request: ")
    assert proxy.received == []


async def test_stream_flag_is_checked_before_anything_else(hostd: HostdProcess) -> None:
    # ``hostd`` runs with the model backend off: the flag error still wins.
    async with await hostd.connect() as c:
        bad = {"entry_protocol": "nope", "proxy_url": "ftp://x"}
        e = await error_of(c, "host.model.execute", {**bad, "stream": True})
        assert (e.code, e.message) == (-32000, "host.model.execute requires stream=false")
        e = await error_of(c, "host.model.execute_stream", bad)
        assert (e.code, e.message) == (-32000, "host.model.execute_stream requires stream=true")
        e = await error_of(c, "host.model.execute_stream", {**bad, "stream": False})
        assert e.message == "host.model.execute_stream requires stream=true"
        e = await error_of(c, "host.model.execute_stream", {**bad, "stream": None})
        assert e.message == "host.model.execute_stream requires stream=true"


async def test_proxy_url_is_checked_before_the_unavailable_backend(hostd: HostdProcess) -> None:
    """CLIProxyAPI v8's order: a bad proxy_url is reported even when no executor is configured."""
    async with await hostd.connect() as c:
        bad = {"entry_protocol": "nope", "proxy_url": "ftp://x"}
        for method, extra in (("host.model.execute", {}), ("host.model.execute_stream", {"stream": True})):
            e = await error_of(c, method, {**bad, **extra})
            assert (e.code, e.message) == (-32000, "invalid proxy_url")
            e = await error_of(c, method, {"entry_protocol": "nope", "proxy_url": "http://proxy:8080", **extra})
            assert (e.code, e.message) == (-32000, "host model executor is unavailable")


async def test_proxy_url_is_checked_before_the_entry_protocol(client: Client, proxy: FakeProxy) -> None:
    for method, extra in (("host.model.execute", {}), ("host.model.execute_stream", {"stream": True})):
        e = await error_of(client, method, {"entry_protocol": "nope", "proxy_url": "ftp://x", **extra})
        assert (e.code, e.message) == (-32000, "invalid proxy_url")
        assert e.data == {"code": "host_call_failed", "http_status": 400}
    assert proxy.received == []


async def test_invalid_proxy_urls_are_refused(client: Client, proxy: FakeProxy) -> None:
    invalid = [
        "ftp://proxy.internal:21",
        "proxy.internal:8080",
        "//proxy.internal:8080",
        "http://",
        "http://:8080",
        "socks5://proxy.internal:0",
        "socks5://proxy.internal:65536",
        "https://proxy.internal:port",
        "http://proxy internal:8080",
        "http://proxy.internal:8080\r\nX-Injected: 1",
        "not a url",
    ]
    for value in invalid:
        e = await error_of(client, "host.model.execute", execute_params(proxy_url=value))
        assert (e.message, e.data.get("http_status")) == ("invalid proxy_url", 400), value
    assert proxy.received == []


async def test_valid_proxy_urls_are_forwarded(client: Client, proxy: FakeProxy) -> None:
    valid = ["http://proxy.internal", "https://proxy.internal:443", "SOCKS5://10.0.0.1:1", "http://[::1]:65535"]
    for value in valid:
        await client.call("host.model.execute", execute_params(proxy_url=value), timeout=5)
    assert [r.header("x-cpa-proxy-url") for r in proxy.received] == valid


async def test_unknown_entry_protocol_names_the_supported_ones(client: Client, proxy: FakeProxy) -> None:
    for method, extra in (("host.model.execute", {}), ("host.model.execute_stream", {"stream": True})):
        for value in ("anthropic", "", "OpenAI", " claude"):
            e = await error_of(client, method, {"entry_protocol": value, **extra})
            assert e.code == -32000
            assert e.message == f'unsupported entry_protocol "{value}": supported values are {SUPPORTED}'
            assert e.data == {"code": "host_call_failed", "http_status": 400}
    assert proxy.received == []


# Proxy errors -------------------------------------------------------------------------------------


async def test_proxy_json_error_becomes_the_message_with_its_status(client: Client, proxy: FakeProxy) -> None:
    proxy.plan(error(429, "rate limited, retry later", "rate_limit_error"))
    e = await error_of(client, "host.model.execute", execute_params())
    assert (e.code, e.message) == (-32000, "rate limited, retry later")
    assert e.data == {"code": "host_call_failed", "http_status": 429}


async def test_wrong_proxy_key_is_the_proxys_401(short_tmp: Path, proxy: FakeProxy) -> None:
    async with (
        running_hostd(short_tmp, "--model-base-url", proxy.url, env={"HOSTD_MODEL_API_KEY": "wrong"}) as hp,
        await hp.connect() as c,
    ):
        e = await error_of(c, "host.model.execute", execute_params())
    assert (e.message, e.data["http_status"]) == ("Invalid API key", 401)
    assert proxy.received[0].header("authorization") == "Bearer wrong"


async def test_proxy_text_error_is_trimmed(client: Client, proxy: FakeProxy) -> None:
    proxy.plan(text(500, b"  \n upstream exploded \n"))
    e = await error_of(client, "host.model.execute", execute_params())
    assert (e.message, e.data["http_status"]) == ("upstream exploded", 500)


async def test_proxy_json_without_error_message_gives_the_body(client: Client, proxy: FakeProxy) -> None:
    proxy.plan(Json(b'{"detail": "no route"}', 404))
    e = await error_of(client, "host.model.execute", execute_params())
    assert (e.message, e.data["http_status"]) == ('{"detail": "no route"}', 404)


async def test_long_proxy_error_body_is_cut_to_1_kib(client: Client, proxy: FakeProxy) -> None:
    proxy.plan(text(503, b"x" * 5000))
    e = await error_of(client, "host.model.execute", execute_params())
    assert e.message == "x" * 1024
    assert e.data["http_status"] == 503


async def test_empty_proxy_error_body_gives_the_default_text(client: Client, proxy: FakeProxy) -> None:
    proxy.plan(text(502, b"   "))
    e = await error_of(client, "host.model.execute", execute_params())
    assert (e.message, e.data["http_status"]) == ("model execution failed with status 502", 502)


async def test_execute_stream_proxy_error_opens_no_stream(client: Client, proxy: FakeProxy) -> None:
    proxy.plan(error(400, "model gpt-nope not found"))
    e = await error_of(client, "host.model.execute_stream", stream_params())
    assert (e.code, e.message) == (-32000, "model gpt-nope not found")
    assert e.data == {"code": "host_call_failed", "http_status": 400}


async def test_transport_failure_is_retryable_502(short_tmp: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with running_hostd(short_tmp, "--model-base-url", f"http://127.0.0.1:{port}") as hp, await hp.connect() as c:
        for method, params in (
            ("host.model.execute", execute_params()),
            ("host.model.execute_stream", stream_params()),
        ):
            e = await error_of(c, method, params)
            assert e.code == -32000
            assert e.message.startswith("model execution failed: ")
            assert e.data == {"code": "host_call_failed", "http_status": 502, "retryable": True}


async def test_model_timeout_aborts_the_call_as_a_retryable_502(short_tmp: Path, proxy: FakeProxy) -> None:
    config = short_tmp / "hostd.toml"
    config.write_text("[model]\ntimeout_s = 0.3\napi_key_env = ''\n")
    never = asyncio.Event()
    proxy.plan(Json(b"{}", head_gate=never), Sse([], head_gate=never))
    async with (
        running_hostd(short_tmp, "--config", str(config), "--model-base-url", proxy.url) as hp,
        await hp.connect() as c,
    ):
        for method, params in (
            ("host.model.execute", execute_params()),
            ("host.model.execute_stream", stream_params()),
        ):
            e = await error_of(c, method, params)
            assert e.message == "model execution failed: timeout after 0.3s", method
            assert e.data == {"code": "host_call_failed", "http_status": 502, "retryable": True}
    async with asyncio.timeout(5):
        for exchange in proxy.exchanges:
            await exchange.disconnected.wait()
    assert len(proxy.exchanges) == 2
    # No key configured: hostd sends none.
    assert all(r.header("authorization") is None for r in proxy.received)


# Streams ------------------------------------------------------------------------------------------


async def test_execute_stream_result_has_all_keys(client: Client, proxy: FakeProxy) -> None:
    result = await client.call("host.model.execute_stream", stream_params(), timeout=5)
    assert set(result) == {"status_code", "headers", "stream_id"}
    assert result["status_code"] == 200
    assert result["headers"]["Content-Type"] == ["text/event-stream"]
    assert result["headers"]["Cache-Control"] == ["no-cache"]
    assert "Transfer-Encoding" not in result["headers"]  # hostd's connection to the proxy, not the answer
    assert len(result["stream_id"]) >= 32


async def test_stream_relays_each_event_as_it_arrives(client: Client, proxy: FakeProxy) -> None:
    events = [sse_event({"n": i}, "delta") for i in range(4)]
    gates = {i: asyncio.Event() for i in range(1, 4)}
    proxy.plan(Sse(events, gates))
    result = await client.call("host.model.execute_stream", stream_params(), timeout=5)
    received = b""
    for i, event in enumerate(events):
        if i in gates:
            gates[i].set()
        # The proxy has sent exactly this event and waits: hostd hands it over without
        # waiting to fill a piece.
        while not received.endswith(event):
            got = await read(client, result["stream_id"])
            assert got["done"] is False and got["error"] == ""
            received += unb64(got["payload"])
        assert proxy.exchanges[0].events_sent == i + 1
    assert received == b"".join(events)
    assert await read(client, result["stream_id"]) == {"payload": None, "error": "", "done": True}


async def test_stream_body_is_relayed_unchanged(client: Client, proxy: FakeProxy) -> None:
    for protocol, model, path in (
        ("openai", "gpt-test", "/v1/chat/completions"),
        ("openai-response", "gpt-test", "/v1/responses"),
        ("claude", "claude-test", "/v1/messages"),
    ):
        body = orjson.dumps({"model": model, "stream": True})
        result = await client.call(
            "host.model.execute_stream", stream_params(body, entry_protocol=protocol, model=model), timeout=5
        )
        data, end = await read_all(client, result["stream_id"])
        exchange = proxy.exchanges[-1]
        assert exchange.request.path == path
        assert isinstance(exchange.answer, Sse)
        assert data == b"".join(exchange.answer.events)
        assert end["error"] == ""


async def test_stream_pieces_are_at_most_32_kib(client: Client, proxy: FakeProxy) -> None:
    big = b"data: " + b"y" * (100 * 1024) + b"\n\n"
    proxy.plan(Sse([big]))
    result = await client.call("host.model.execute_stream", stream_params(), timeout=5)
    sizes = []
    data = b""
    while not (got := await read(client, result["stream_id"]))["done"]:
        piece = unb64(got["payload"])
        sizes.append(len(piece))
        data += piece
    assert data == big
    assert max(sizes) <= 32 * 1024
    assert min(sizes) >= 1


async def test_stream_failing_midway_reads_error_then_is_gone(client: Client, proxy: FakeProxy) -> None:
    events = [sse_event({"n": 1}), sse_event({"n": 2}), sse_event({"n": 3})]
    proxy.plan(Sse(events, fail_after=2))
    result = await client.call("host.model.execute_stream", stream_params(), timeout=5)
    data, end = await read_all(client, result["stream_id"])
    assert data == events[0] + events[1]
    assert end["done"] is True and end["payload"] is None
    assert end["error"].startswith("model stream failed: ")
    assert await read(client, result["stream_id"]) == {"payload": None, "error": "", "done": True}


async def test_unknown_stream_id_reads_done(client: Client) -> None:
    assert await read(client, "0123456789abcdef") == {"payload": None, "error": "", "done": True}


async def test_empty_stream_id_is_required(client: Client) -> None:
    e = await error_of(client, "host.model.stream_read", {"stream_id": ""})
    assert (e.code, e.message) == (-32000, "model stream id is required")
    # Ids are compared exactly as sent: "  " is an unknown id, which reads as done.
    assert await read(client, "  ") == {"payload": None, "error": "", "done": True}


async def test_read_after_end_reads_done(client: Client, proxy: FakeProxy) -> None:
    result = await client.call("host.model.execute_stream", stream_params(), timeout=5)
    await read_all(client, result["stream_id"])
    for _ in range(2):
        assert await read(client, result["stream_id"]) == {"payload": None, "error": "", "done": True}


async def test_stream_close_cancels_the_upstream(client: Client, proxy: FakeProxy) -> None:
    gate = asyncio.Event()  # never set: the proxy waits before its second event
    proxy.plan(Sse([sse_event({"n": 1}), sse_event({"n": 2})], {1: gate}))
    result = await client.call("host.model.execute_stream", stream_params(), timeout=5)
    first = await read(client, result["stream_id"])
    assert unb64(first["payload"]) == sse_event({"n": 1})
    exchange = proxy.exchanges[0]
    assert not exchange.disconnected.is_set()
    assert await client.call("host.model.stream_close", {"stream_id": result["stream_id"]}, timeout=5) == {}
    async with asyncio.timeout(5):
        await exchange.disconnected.wait()
    assert not exchange.completed
    assert await read(client, result["stream_id"]) == {"payload": None, "error": "", "done": True}


async def test_stream_close_is_idempotent_and_accepts_unknown_ids(client: Client, proxy: FakeProxy) -> None:
    result = await client.call("host.model.execute_stream", stream_params(), timeout=5)
    for stream_id in (result["stream_id"], result["stream_id"], "unknown", ""):
        assert await client.call("host.model.stream_close", {"stream_id": stream_id}, timeout=5) == {}


async def test_pending_read_ends_done_when_the_stream_is_closed(client: Client, proxy: FakeProxy) -> None:
    gate = asyncio.Event()
    proxy.plan(Sse([sse_event({"n": 1})], {0: gate}))
    result = await client.call("host.model.execute_stream", stream_params(), timeout=5)
    rid = client.next_id()
    pending = client.expect(rid)
    read_params = {"stream_id": result["stream_id"]}
    await client.send({"jsonrpc": "2.0", "id": rid, "method": "host.model.stream_read", "params": read_params})
    await client.call("hostd.hello", {}, timeout=5)  # answered after hostd took the read
    assert not pending.done()
    assert await client.call("host.model.stream_close", {"stream_id": result["stream_id"]}, timeout=5) == {}
    async with asyncio.timeout(5):
        assert await pending == {"payload": None, "error": "", "done": True}
    async with asyncio.timeout(5):
        await proxy.exchanges[0].disconnected.wait()


async def test_slow_reader_keeps_the_proxy_paused(client: Client, proxy: FakeProxy) -> None:
    total = 64 * 1024 * 1024
    bound = 24 * 1024 * 1024  # 4 pieces in hostd, plus what the kernel and httpx may hold
    proxy.plan(Flood(total))
    result = await client.call("host.model.execute_stream", stream_params(), timeout=5)
    exchange = proxy.exchanges[0]
    # Nobody reads: hostd's buffer fills, then the sockets', then the proxy's writes block
    # for good. "For good" is shown with sentinels, not a window of time: the proxy's writes
    # stay blocked, with not one more byte taken, across three hostd.hello round trips in a
    # row (hostd's event loop runs them, and would pull the body meanwhile if it pulled).
    # Without backpressure hostd takes the whole body and the bound below fails.
    quiet = 0
    async with asyncio.timeout(20):
        while quiet < 3:
            await proxy.wait_for(lambda: exchange.writes_blocked or exchange.completed)
            stalled_at = exchange.bytes_sent
            await client.call("hostd.hello", {}, timeout=5)
            assert exchange.bytes_sent < bound and not exchange.completed, "hostd pulled the body with nobody reading"
            quiet = quiet + 1 if exchange.writes_blocked and exchange.bytes_sent == stalled_at else 0
    assert exchange.writes_blocked
    # Reading lets the proxy send again.
    while exchange.bytes_sent == stalled_at:
        got = await read(client, result["stream_id"])
        assert got["done"] is False and 1 <= len(unb64(got["payload"])) <= 32 * 1024
    assert await client.call("host.model.stream_close", {"stream_id": result["stream_id"]}, timeout=5) == {}
    async with asyncio.timeout(5):
        await exchange.disconnected.wait()
    assert not exchange.completed
    assert exchange.bytes_sent < total


async def test_cancelled_execute_stream_aborts_the_proxy_call(client: Client, proxy: FakeProxy) -> None:
    head_gate = asyncio.Event()  # the proxy never answers
    proxy.plan(Sse([sse_event({"n": 1})], head_gate=head_gate))
    rid = client.next_id()
    answer = client.expect(rid)
    await client.send({"jsonrpc": "2.0", "id": rid, "method": "host.model.execute_stream", "params": stream_params()})
    exchange = await proxy.next_exchange()
    await client.notify("$/cancelRequest", {"id": rid})
    with pytest.raises(RpcError) as e:
        async with asyncio.timeout(5):
            await answer
    assert e.value.code == -32800
    async with asyncio.timeout(5):
        await exchange.disconnected.wait()


async def test_stream_outlives_the_call_that_opened_it(client: Client, proxy: FakeProxy) -> None:
    gate = asyncio.Event()
    proxy.plan(Sse([sse_event({"n": 1}), sse_event({"n": 2})], {1: gate}))
    result = await client.call("host.model.execute_stream", stream_params(), timeout=5)
    # Other calls come and go; the stream keeps going.
    await client.call("host.model.execute", execute_params(), timeout=5)
    gate.set()
    data, end = await read_all(client, result["stream_id"])
    assert data == sse_event({"n": 1}) + sse_event({"n": 2})
    assert end["error"] == ""


async def test_another_sessions_stream_reads_done_and_close_leaves_it_open(
    model_hostd: HostdProcess, client: Client, proxy: FakeProxy
) -> None:
    result = await client.call("host.model.execute_stream", stream_params(), timeout=5)
    async with await model_hostd.connect() as other:
        assert await read(other, result["stream_id"]) == {"payload": None, "error": "", "done": True}
        assert await other.call("host.model.stream_close", {"stream_id": result["stream_id"]}, timeout=5) == {}
    data, _ = await read_all(client, result["stream_id"])
    answer = proxy.exchanges[0].answer
    assert isinstance(answer, Sse)
    assert data == b"".join(answer.events)


async def test_execute_stream_with_a_callback_id_that_is_not_open_is_already_finished(
    client: Client, proxy: FakeProxy
) -> None:
    result = await client.call("host.model.execute_stream", stream_params(host_callback_id="ended-or-never"), timeout=5)
    assert result["status_code"] == 0
    assert result["headers"] is None
    assert set(result) == {"status_code", "headers", "stream_id"}
    assert await read(client, result["stream_id"]) == {"payload": None, "error": "", "done": True}
    assert proxy.received == []


async def test_foreign_or_unknown_scope_on_stream_read_and_close_is_not_an_error(client: Client) -> None:
    params = {"stream_id": "abc", "host_callback_id": "not-open"}
    assert await client.call("host.model.stream_read", params, timeout=5) == {
        "payload": None,
        "error": "",
        "done": True,
    }
    assert await client.call("host.model.stream_close", params, timeout=5) == {}
