"""Go plugins that send CLIProxyAPI's pluginapi payloads unchanged (PROTOCOL §3's key rule).

The probe (plugins/go/internal/probe) calls host.* with the SDK's pluginapi look-alikes, which
marshal exactly as CLIProxyAPI's sdk/pluginapi types do: pluginapi.HTTPRequest has no JSON tags,
so it goes on the wire as {"Method", "URL", "Headers", "Body"}, and hostd must match those keys
as Go's encoding/json does (case-insensitively). HostModelExecutionRequest is tagged lower-case.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hostd.client import Client
from tests.support.fake_proxy import FakeProxy
from tests.support.gotool import go_build
from tests.support.hostd_proc import HostdProcess, start_hostd
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio

PROBE_SRC = Path(__file__).resolve().parents[1] / "plugins" / "go" / "internal" / "probe"
T = 20.0


@pytest.fixture(scope="module")
def probe() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hostd-go-") as tmp:
        yield go_build(PROBE_SRC, Path(tmp) / "probe")


@pytest.fixture(scope="module")
async def servers() -> AsyncIterator[tuple[HostdProcess, FakeProxy, Upstream, Client]]:
    with tempfile.TemporaryDirectory(prefix="hostd-", dir="/tmp") as tmp:
        proxy = await FakeProxy().start()
        upstream = await Upstream().start()

        @upstream.route("/native")
        async def native(req: Request) -> Response:
            echo = {"method": req.method, "x_native": req.header("X-Native"), "body": req.body.decode()}
            return Response(200, [("Content-Type", "application/json")], json.dumps(echo).encode())

        hp = await start_hostd(Path(tmp), "--model-base-url", proxy.url, control=True)
        try:
            async with await hp.connect_control() as ctl:
                yield hp, proxy, upstream, ctl
        finally:
            await hp.stop()
            await upstream.stop()
            await proxy.stop()


@pytest.fixture(scope="module")
async def probe_running(probe: Path, servers: tuple[HostdProcess, FakeProxy, Upstream, Client]) -> AsyncIterator[None]:
    hp = servers[0]
    env = {**os.environ, "HOSTD_SOCKET": f"unix:{hp.socket}"}
    proc = await asyncio.create_subprocess_exec(str(probe), "go-parity", env=env)
    try:
        await hp.wait_log('"plugin":"go-parity"', timeout=T)
        yield
    finally:
        proc.terminate()
        await proc.wait()


async def ask(ctl: Client, method: str, params: dict[str, Any]) -> Any:
    request = {"plugin_id": "go-parity", "method": method, "params": params}
    return (await ctl.call("hostd.invoke", request, timeout=T))["result"]


async def test_pluginapi_model_request_runs_unchanged(
    servers: tuple[HostdProcess, FakeProxy, Upstream, Client], probe_running: None
) -> None:
    _, proxy, _, ctl = servers
    proxy.reset()
    result = await ask(ctl, "t.native_model", {"model": "gpt-native"})
    assert result["status"] == 200
    assert json.loads(result["body"])["model"] == "gpt-native"
    [received] = proxy.received
    assert received.header("X-CPA-Host-Callback-ID")


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "nested-request"])
async def test_untagged_pluginapi_http_request_is_understood(
    servers: tuple[HostdProcess, FakeProxy, Upstream, Client], probe_running: None, nested: bool
) -> None:
    _, _, upstream, ctl = servers
    result = await ask(ctl, "t.native_http", {"url": f"{upstream.url}/native", "nested": nested})
    assert result["status"] == 200
    assert result["content_type"] == "application/json"
    assert json.loads(result["body"]) == {"method": "POST", "x_native": "yes", "body": "native body"}
