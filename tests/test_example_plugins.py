"""The Python and bash example plugins, ``hostd invoke`` and the demo, end to end.

The examples run as their own processes on a real hostd's plugin socket; the host side
invokes them from the control socket as the proxy would, with a real upstream and a real
fake proxy (the model API) on 127.0.0.1 and a real auth directory. The Node and Go examples
are tested by their SDKs' own tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hostd.client import Client
from tests.support.fake_proxy import FakeProxy, Sse, default_events, sse_event
from tests.support.hostd_proc import HOSTD, HostdProcess, running_hostd
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "plugins" / "python" / "examples"
T = 30.0


@pytest.fixture
async def full(short_tmp: Path, proxy: FakeProxy) -> AsyncIterator[HostdProcess]:
    auth = short_tmp / "auth"
    auth.mkdir()
    (auth / "claude-a.json").write_text('{"type": "claude", "email": "a@example.com"}')
    (auth / "codex-b.json").write_text('{"type": "codex"}')
    async with running_hostd(short_tmp, "--model-base-url", proxy.url, "--auth-dir", str(auth), control=True) as hp:
        yield hp


@contextlib.asynccontextmanager
async def example(hp: HostdProcess, name: str, plugin_id: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``plugins/python/examples/<name>.py`` on hostd's socket until it has said hello."""
    env = {**os.environ, "HOSTD_SOCKET": f"unix:{hp.socket}"}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(EXAMPLES / f"{name}.py"), env=env)
    try:
        await hp.wait_log(f'"msg":"hello plugin","plugin":"{plugin_id}"')
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(T):
            code = await proc.wait()
        assert code == 0, f"{name}.py exited {code} after SIGTERM"


async def invoke(ctl: Client, plugin_id: str, method: str, params: dict[str, Any], stream: bool = False) -> Any:
    request = {"plugin_id": plugin_id, "method": method, "params": params, "stream": stream}
    return await ctl.call("hostd.invoke", request, timeout=T)


async def run(*argv: str, env: dict[str, str] | None = None, code: int = 0) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})}
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:\n{out.decode()}\nstderr:\n{err.decode()}"
    return out.decode(), err.decode()


# The Python examples -----------------------------------------------------------------------


async def test_python_management_example_calls_four_families_under_its_scope(
    full: HostdProcess, upstream: Upstream, proxy: FakeProxy
) -> None:
    @upstream.route("/hello")
    async def hello(_: Request) -> Response:
        return Response(200, body=b"hello from upstream")

    params = {"url": upstream.url + "/hello", "model": "demo-model"}
    async with example(full, "management", "demo-management-python"), await full.connect_control() as ctl:
        answer = await invoke(ctl, "demo-management-python", "management.handle", params)
    log = json.loads(await full.wait_log('"msg":"management.handle"'))
    result = answer["result"]
    model_body = json.loads(result.pop("model_body"))
    assert result == {
        "plugin": "demo-management-python",
        "auth_files": 2,
        "http_status": 200,
        "http_body": "hello from upstream",
        "model_status": 200,
    }
    assert model_body["model"] == "demo-model" and model_body["path"] == "/v1/chat/completions"
    [sent] = proxy.received
    assert json.loads(sent.body) == {"model": "demo-model", "messages": [{"role": "user", "content": "hello"}]}
    assert sent.header("X-CPA-Skip-Plugin") == "demo-management-python"
    assert sent.header("X-CPA-Host-Callback-ID")  # the scope hostd.invoke opened, forwarded by the plugin
    assert (log["level"], log["plugin"], log["url"]) == ("info", "demo-management-python", params["url"])


async def test_python_executor_example_streams_the_model_answer_unchanged(full: HostdProcess, proxy: FakeProxy) -> None:
    params = {"model": "demo-model", "prompt": "Say hello"}
    async with example(full, "executor", "demo-executor-python"), await full.connect_control() as ctl:
        answer = await invoke(ctl, "demo-executor-python", "executor.execute_stream", params, stream=True)
        reads = []
        while not reads or not reads[-1]["done"]:
            reads.append(await ctl.call("hostd.stream.read", {"stream_id": answer["stream_id"]}, timeout=T))
    assert answer["result"] == {}
    streamed = b"".join(base64.b64decode(r["payload"]) for r in reads if r["payload"])
    assert streamed == b"".join(default_events("/v1/chat/completions", "demo-model"))
    assert reads[-1] == {"payload": None, "error": "", "done": True}
    [sent] = proxy.received
    body = json.loads(sent.body)
    assert body["stream"] is True and body["messages"][-1]["content"] == "Say hello"
    assert sent.header("X-CPA-Skip-Plugin") == "demo-executor-python"


async def test_python_example_exits_1_when_hostd_is_not_there(short_tmp: Path) -> None:
    _, err = await run(
        sys.executable, str(EXAMPLES / "management.py"), env={"HOSTD_SOCKET": f"unix:{short_tmp}/none.sock"}, code=1
    )
    assert err.startswith("demo-management-python: ")


# hostd invoke ------------------------------------------------------------------------------


async def test_hostd_invoke_stream_prints_each_chunk_and_exits_0(full: HostdProcess) -> None:
    async with example(full, "executor", "demo-executor-python"):
        out, err = await run(
            *HOSTD, "invoke", "--control", f"unix:{full.control}", "--plugin", "demo-executor-python",
            "--stream", "executor.execute_stream", '{"model": "m", "prompt": "hi"}',
        )  # fmt: skip
    assert out == b"".join(default_events("/v1/chat/completions", "m")).decode()
    assert err.strip() == "{}"  # the plugin's result


async def test_hostd_invoke_stream_exits_1_on_a_stream_error(full: HostdProcess, proxy: FakeProxy) -> None:
    proxy.plan(Sse([sse_event({"n": 1})], fail_after=1))  # the proxy's stream breaks after one event
    async with example(full, "executor", "demo-executor-python"):
        out, err = await run(
            *HOSTD, "invoke", "--control", f"unix:{full.control}", "--plugin", "demo-executor-python",
            "--stream", "executor.execute_stream", '{"model": "m", "prompt": "hi"}', code=1,
        )  # fmt: skip
    assert out == sse_event({"n": 1}).decode()
    assert "hostd invoke: stream error: " in err


async def test_hostd_invoke_prints_a_plain_result_and_exits_1_or_2_on_failures(
    full: HostdProcess, upstream: Upstream
) -> None:
    control = f"unix:{full.control}"
    params = json.dumps({"url": upstream.url + "/missing", "model": "m"})
    async with example(full, "management", "demo-management-python"):
        out, _ = await run(*HOSTD, "invoke", "--control", control, "--plugin", "demo-management-python",
                           "management.handle", params)  # fmt: skip
    _, missing = await run(*HOSTD, "invoke", "--control", control, "--plugin", "nobody", "x.y", code=1)
    _, unreachable = await run(*HOSTD, "invoke", "--control", "unix:/nonexistent.sock", "--plugin", "p", "m", code=2)
    assert json.loads(out)["http_status"] == 404
    assert json.loads(missing)["error"]["message"] == "no session for plugin nobody"
    assert unreachable.startswith("hostd invoke: cannot connect to unix:/nonexistent.sock")


# bash --------------------------------------------------------------------------------------


async def test_bash_plugin_over_stdio() -> None:
    out, _ = await run("bash", str(REPO / "plugins" / "shell" / "hello.sh"), env={"PYTHON": sys.executable})
    lines = out.splitlines()
    assert lines[0].startswith('hello      -> {"jsonrpc":"2.0","id":1,"result":{"server":"hostd"')
    assert lines[1] == 'host.log   -> {"jsonrpc":"2.0","id":2,"result":{}}'
    assert '"message":"unsupported host callback host.nope"' in lines[2]


# make demo ---------------------------------------------------------------------------------


async def test_the_demo_runs_to_completion_and_shows_every_family() -> None:
    out, _ = await run(sys.executable, str(REPO / "plugins" / "demo.py"), env={"HOSTD_MODEL_BASE_URL": ""})
    headings = [line for line in out.splitlines() if line.startswith("== ")]
    for family in ("host.log", "host.http.*", "host.model.*", "host.auth.*", "host side", "bash"):
        assert any(family in heading for heading in headings), f"no {family} heading in:\n{out}"
    assert "stand-in" in out
    assert "demo-management-python" in out and "demo-executor-python" in out
    assert out.rstrip().splitlines()[-1].startswith("demo succeeded in ")
