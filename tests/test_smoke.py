from __future__ import annotations

import pytest

from hostd.client import RpcError
from tests.support.hostd_proc import HostdProcess
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio


async def test_hello_over_unix_socket(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        result = await c.call("hostd.hello", {"plugin_id": "demo", "schema_version": 3}, timeout=5)
    assert result["server"] == "hostd"
    assert result["limits"]["stream_piece_bytes"] == 32768


async def test_http_do_round_trip(hostd: HostdProcess, upstream: Upstream) -> None:
    @upstream.route("/hello")
    async def hello(req: Request) -> Response:
        return Response(200, [("x-api-key", "k")], b"hi " + req.body)

    async with await hostd.connect() as c:
        result = await c.call(
            "host.http.do", {"method": "POST", "url": upstream.url + "/hello", "body": "Ym9keQ=="}, timeout=5
        )
    assert result["StatusCode"] == 200
    assert result["Body"] == "aGkgYm9keQ=="
    assert result["Headers"]["X-Api-Key"] == ["k"]


async def test_unknown_host_method(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.nope", {}, timeout=5)
    assert e.value.code == -32601
    assert e.value.message == "unsupported host callback host.nope"
