"""Params keys match as Go's ``encoding/json`` matches them (PROTOCOL §3).

First the decoder itself on small structs (exact key wins, the last folded key wins,
underscores count, map keys never fold, Go's base64 and null leniencies), then real
hostd processes fed the payloads Go plugins send: ``pluginapi.HTTPRequest`` has no JSON
tags, so ``json.Marshal`` writes ``{"Method":…,"URL":…,"Headers":…,"Body":…}``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from hostd.client import Client, RpcError
from hostd.errors import InvalidParams
from hostd.rpc.params import ParamsDecoder
from tests.support.helpers import b64, unb64
from tests.support.hostd_proc import HostdProcess, start_hostd
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio


class Inner(msgspec.Struct, frozen=True, kw_only=True):
    method: str = ""
    url: str = ""
    headers: dict[str, list[str]] | None = None
    body: bytes | None = None


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    http1_only: bool = False
    header_profile: list[str] | None = None


class Outer(msgspec.Struct, frozen=True, kw_only=True):
    method: str = ""
    url: str = ""
    headers: dict[str, list[str]] | None = None
    body: bytes | None = None
    request: Inner | None = None
    wire_profile: Profile | None = None
    auth_index: str = ""
    fields: msgspec.Raw = msgspec.Raw(b"")
    host_callback_id: str = ""


DECODER = ParamsDecoder(Outer, "test")


def decode(params: Any) -> Outer:
    data = params if isinstance(params, bytes) else json.dumps(params).encode()
    result: Outer = DECODER.decode_or_raise(data)
    return result


def test_lower_case_keys_decode_on_the_fast_path() -> None:
    data = b'{"method":"GET","url":"u","body":"aGk=","host_callback_id":"c"}'
    assert DECODER.exact(data) == decode(data)  # the strict twin accepted it as it is
    assert decode(data).body == b"hi"


def test_go_field_names_fold_to_the_struct_fields() -> None:
    got = decode({"Method": "POST", "URL": "u", "Headers": {"X-A": ["1"]}, "Body": "aGk=", "Auth_Index": "ix"})
    assert (got.method, got.url, got.headers, got.body, got.auth_index) == ("POST", "u", {"X-A": ["1"]}, b"hi", "ix")
    assert isinstance(got, Outer)


def test_a_mix_of_exact_and_folded_keys_matches_both() -> None:
    got = decode({"url": "u", "Method": "POST"})
    assert (got.method, got.url) == ("POST", "u")


def test_an_exact_key_wins_over_a_folded_one_in_either_order() -> None:
    assert decode({"url": "exact", "URL": "folded"}).url == "exact"
    assert decode({"URL": "folded", "url": "exact"}).url == "exact"


def test_the_last_folded_key_wins() -> None:
    assert decode({"URL": "a", "Url": "b"}).url == "b"
    assert decode(b'{"URL":"a","uRL":"b","Url":"c"}').url == "c"


def test_underscores_are_significant() -> None:
    assert decode({"authindex": "x", "AuthIndex": "y"}).auth_index == ""
    assert decode({"AUTH_INDEX": "z"}).auth_index == "z"


def test_unicode_simple_folding_matches_kelvin_and_long_s() -> None:
    assert decode(b'{"ur\\u006c":"u","Me\\u0074hod":"M","host_callback_\\u0131d":"no"}').host_callback_id == ""
    got = decode({"HO\u017fT_CALLBACK_ID": "s", "method": "m"})
    assert got.host_callback_id == "s"


def test_nested_structs_fold_and_maps_never_do() -> None:
    got = decode(
        {
            "Request": {"Method": "PUT", "URL": "n", "Headers": {"x-lower": ["1"], "X-Upper": ["2"]}},
            "Wire_Profile": {"HTTP1_Only": True, "Header_Profile": ["X-Upper", "x-lower"]},
            "Fields": {"Key": 1, "key": 2},
        }
    )
    assert got.request is not None and got.request.method == "PUT" and got.request.url == "n"
    assert got.request.headers == {"x-lower": ["1"], "X-Upper": ["2"]}
    assert got.wire_profile is not None and got.wire_profile.http1_only is True
    assert got.wire_profile.header_profile == ["X-Upper", "x-lower"]
    assert json.loads(bytes(got.fields)) == {"Key": 1, "key": 2}
    raw = decode(b'{"FIELDS": {"Key" :1,  "key":2}}').fields
    assert bytes(raw) == b'{"Key" :1,  "key":2}'  # passed through byte for byte


def test_an_untagged_wireprofile_key_does_not_match() -> None:
    assert decode({"WireProfile": {"http1_only": True}}).wire_profile is None


def test_base64_with_line_breaks_is_read_as_go_reads_it() -> None:
    assert decode({"body": "YWJj\r\nZGVm\n"}).body == b"abcdef"
    got = decode({"Request": {"Body": "aG\nk="}})
    assert got.request is not None and got.request.body == b"hi"


@pytest.mark.parametrize(
    ("params", "field"), [({"body": "a b"}, "$.body"), ({"request": {"Body": "!"}}, "$.request.body")]
)
def test_invalid_base64_names_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParams) as e:
        decode(params)
    assert e.value.message.startswith("decode test request: ") and field in e.value.message


def test_null_header_values_and_null_elements_are_accepted_as_go_accepts_them() -> None:
    got = decode({"headers": {"X-Null": None, "X-List": ["a", None]}, "wire_profile": {"header_profile": [None, "b"]}})
    assert got.headers == {"X-Null": [], "X-List": ["a", ""]}
    assert got.wire_profile is not None and got.wire_profile.header_profile == ["", "b"]
    assert decode({"Headers": None}).headers is None


def test_null_for_a_field_that_cannot_be_null_leaves_it_unchanged() -> None:
    got = decode({"method": None, "URL": "u", "Auth_Index": None, "wire_profile": {"http1_only": None}})
    assert (got.method, got.url, got.auth_index) == ("", "u", "")
    assert got.wire_profile is not None and got.wire_profile.http1_only is False
    assert decode({"body": None, "request": None}).body is None


def test_errors_after_folding_name_the_struct_field() -> None:
    with pytest.raises(InvalidParams) as e:
        decode({"URL": 5})
    assert e.value.message == "decode test request: Expected `str`, got `int` - at `$.url`"


def test_params_that_are_not_an_object_keep_their_error() -> None:
    with pytest.raises(InvalidParams) as e:
        decode(b"[1]")
    assert e.value.message == "params must be an object"


def test_unknown_keys_are_ignored() -> None:
    assert decode({"Unknown": 1, "other": {"url": "x"}}) == decode({})


# A real hostd, fed what Go plugins marshal ---------------------------------------------------


async def call_raw(c: Client, method: str, params: bytes) -> Any:
    rid = c.next_id()
    answer = c.expect(rid)
    await c.send_raw(b'{"jsonrpc":"2.0","id":%d,"method":"%s","params":%s}\n' % (rid, method.encode(), params))
    return await answer


@pytest.fixture
async def served(short_tmp: Path) -> AsyncIterator[tuple[HostdProcess, Path]]:
    auth = short_tmp / "auth"
    auth.mkdir()
    hp = await start_hostd(short_tmp, "--auth-dir", str(auth))
    try:
        yield hp, auth
    finally:
        await hp.stop()


async def test_host_http_do_callback_uses_host_http_client(
    served: tuple[HostdProcess, Path], upstream: Upstream
) -> None:
    """Mirrors TestHostHTTPDoCallbackUsesHostHTTPClient: json.Marshal(pluginapi.HTTPRequest{
    Method: POST, URL: server.URL, Body: `{"request":true}`})."""

    @upstream.route("/")
    async def answer(req: Request) -> Response:
        return Response(200, [("X-Test", "ok")], b'{"ok":true}')

    payload = b'{"Method":"POST","URL":"%s/","Headers":null,"Body":"eyJyZXF1ZXN0Ijp0cnVlfQ=="}' % upstream.url.encode()
    async with await served[0].connect() as c:
        result = await call_raw(c, "host.http.do", payload)
    assert result["StatusCode"] == 200 and unb64(result["Body"]) == b'{"ok":true}'
    assert result["Headers"]["X-Test"] == ["ok"]
    req = upstream.requests[-1]
    assert (req.method, req.body) == ("POST", b'{"request":true}')


async def test_http_do_with_go_headers_a_mixed_case_payload_and_line_broken_base64(
    served: tuple[HostdProcess, Path], upstream: Upstream
) -> None:
    @upstream.route("/m")
    async def answer(req: Request) -> Response:
        return Response(204)

    body = b64(b"x" * 100)
    broken = body[:76] + "\r\n" + body[76:]  # as a MIME encoder wraps it
    async with await served[0].connect() as c:
        await c.call(
            "host.http.do",
            {
                "url": upstream.url + "/m",
                "Method": "PUT",
                "Headers": {"X-Go": ["1", None], "x-n": None},
                "Body": broken,
            },
            timeout=10,
        )
    req = upstream.requests[-1]
    assert (req.method, req.body) == ("PUT", b"x" * 100)
    assert [v for k, v in req.headers if k == "X-Go"] == ["1", ""]
    assert req.header("x-n") is None


async def test_http_do_with_a_null_method_is_a_get(served: tuple[HostdProcess, Path], upstream: Upstream) -> None:
    @upstream.route("/null")
    async def answer(req: Request) -> Response:
        return Response(200)

    payload = b'{"Method":null,"URL":"%s/null","Headers":{"X-N":null},"Body":null}' % upstream.url.encode()
    async with await served[0].connect() as c:
        assert (await call_raw(c, "host.http.do", payload))["StatusCode"] == 200
    assert upstream.requests[-1].method == "GET" and upstream.requests[-1].header("X-N") is None


async def test_http_do_nested_go_request(served: tuple[HostdProcess, Path], upstream: Upstream) -> None:
    @upstream.route("/nested")
    async def answer(req: Request) -> Response:
        return Response(200)

    nested = {"Method": "DELETE", "URL": upstream.url + "/nested", "Headers": None, "Body": None}
    async with await served[0].connect() as c:
        result = await c.call("host.http.do", {"URL": upstream.url + "/ignored", "Request": nested}, timeout=10)
    assert result["StatusCode"] == 200
    assert (upstream.requests[-1].method, upstream.requests[-1].path) == ("DELETE", "/nested")


async def test_http_do_invalid_base64_under_a_go_key_is_invalid_params(served: tuple[HostdProcess, Path]) -> None:
    async with await served[0].connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", {"URL": "http://127.0.0.1:1/", "Body": "not base64!"}, timeout=10)
    assert e.value.code == -32602
    assert e.value.message.startswith("decode host http request: ") and "$.body" in e.value.message


async def test_host_log_with_go_keys_keeps_field_keys_as_sent(served: tuple[HostdProcess, Path]) -> None:
    hp = served[0]
    async with await hp.connect() as c:
        await c.call(
            "host.log", {"Level": "WARN", "Message": "from go", "Fields": {"Key": "v", "key": "w"}}, timeout=10
        )
    record = json.loads(await hp.wait_log('"msg":"from go"'))
    assert record["level"] == "warn" and record["Key"] == "v" and record["key"] == "w"


async def test_host_auth_with_go_keys(served: tuple[HostdProcess, Path]) -> None:
    hp, auth = served
    text = b'{"type":"demo",  "Email":"E@x"}'
    async with await hp.connect() as c:
        saved = await call_raw(c, "host.auth.save", b'{"Name":"demo.json","JSON":' + text + b"}")
        assert (auth / "demo.json").read_bytes() == text  # byte for byte, keys inside kept
        [entry] = (await c.call("host.auth.list", {}, timeout=10))["files"]
        got = await c.call("host.auth.get", {"Auth_Index": entry["auth_index"]}, timeout=10)
        runtime = await c.call("host.auth.get_runtime", {"AUTH_INDEX": entry["auth_index"]}, timeout=10)
        with pytest.raises(RpcError) as e:
            await c.call("host.auth.get", {"AuthIndex": entry["auth_index"]}, timeout=10)
    assert saved["path"] == str(auth / "demo.json")
    assert got["json"] == {"type": "demo", "Email": "E@x"}
    assert runtime["auth"] == entry
    assert e.value.message == "auth_index is required"  # underscores are significant


async def test_host_model_execute_with_folded_keys(short_tmp: Path) -> None:
    from tests.support.fake_proxy import FakeProxy

    proxy = await FakeProxy(api_key="k").start()
    try:
        with tempfile.TemporaryDirectory(prefix="hostd-", dir="/tmp") as tmp:
            hp = await start_hostd(Path(tmp), "--model-base-url", proxy.url, env={"HOSTD_MODEL_API_KEY": "k"})
            try:
                async with await hp.connect() as c:
                    params = {
                        "Entry_Protocol": "openai",
                        "Model": "gpt-test",
                        "Stream": False,
                        "Body": b64(b'{"model":"gpt-test","messages":[]}'),
                        "Headers": {"X-Plugin": ["p"]},
                        "Query": {"Q": ["1", None]},
                    }
                    result = await c.call("host.model.execute", params, timeout=10)
            finally:
                await hp.stop()
    finally:
        await proxy.stop()
    assert result["status_code"] == 200
    received = proxy.received[-1]
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.body == b'{"model":"gpt-test","messages":[]}'
    assert received.header("X-Plugin") == "p"
    assert received.query == {"Q": ["1", ""]}
