"""The example plugins in other languages run against a real hostd and a real upstream."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.hostd_proc import HostdProcess
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio
PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def serve_demo_routes(upstream: Upstream) -> None:
    @upstream.route("/hello")
    async def hello(_: Request) -> Response:
        return Response(200, body=b"hello from 127!")

    async def events() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"data: event {i}\n\n".encode()

    @upstream.route("/events")
    async def stream(_: Request) -> Response:
        return Response(200, chunks=events())


async def run(*argv: str, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **env}
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_node_plugin(hostd: HostdProcess, upstream: Upstream) -> None:
    serve_demo_routes(upstream)
    out = await run(
        "node", str(PLUGINS / "node" / "fetch.mjs"), upstream.url, env={"HOSTD_SOCKET": f"unix:{hostd.socket}"}
    )
    assert 'host.http.do -> 200 "hello from 127!"' in out
    assert [line for line in out.splitlines() if line.startswith("stream_read")] == [
        f'stream_read  -> "data: event {i}"' for i in range(3)
    ]
    assert "after done   -> error -32000: http stream" in out
    line = await hostd.wait_log("node plugin says hi")
    assert '"api_key":"[redacted]"' in line and '"plugin":"node-fetch"' in line


async def test_python_example_plugin(hostd: HostdProcess, upstream: Upstream) -> None:
    serve_demo_routes(upstream)
    out = await run(
        sys.executable,
        str(PLUGINS / "examples" / "fetch_plugin.py"),
        upstream.url,
        env={"HOSTD_SOCKET": f"unix:{hostd.socket}"},
    )
    assert "host.http.do       -> 200 'hello from 127!'" in out
    assert out.count("stream_read        -> 'data: event") == 3
    assert "stream_read        -> done" in out


async def test_bash_plugin_over_stdio() -> None:
    out = await run("bash", str(PLUGINS / "shell" / "hello.sh"), env={"PYTHON": sys.executable})
    lines = out.splitlines()
    assert lines[0].startswith('hello      -> {"jsonrpc":"2.0","id":1,"result":{"server":"hostd"')
    assert lines[1] == 'host.log   -> {"jsonrpc":"2.0","id":2,"result":{}}'
    assert '"message":"unsupported host callback host.nope"' in lines[2]
