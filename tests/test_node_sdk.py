"""The Node SDK (plugins/node): its own ``node --test`` suite, and its examples run against a real hostd.

The examples run as separate ``node`` processes on hostd's plugin socket and are invoked from the
control socket as the proxy would; hostd's upstreams are real HTTP servers on 127.0.0.1 (an
upstream for host.http.do and the fake proxy for host.model.*).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hostd.client import RpcError
from tests.support.examples import Stack, example_plugin, example_stack, invoke, joined, wait_log_after
from tests.support.fake_proxy import Sse, default_events, sse_event
from tests.support.helpers import read_emit_stream

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
NODE_SDK = REPO / "plugins" / "node"
T = 20.0


def node() -> str:
    found = shutil.which("node")
    assert found, "node (20+) is required: .ci/run installs it"
    return found


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    async for built in example_stack():
        yield built


def node_example(stack: Stack, name: str, plugin_id: str) -> Any:
    """Run plugins/node/examples/<name>.mjs on hostd's plugin socket; yields once hostd has its hello."""
    env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"}
    return example_plugin(stack, [node(), str(NODE_SDK / "examples" / f"{name}.mjs")], plugin_id, env)


# The SDK's own tests ------------------------------------------------------------------------


async def test_node_sdk_tests_pass() -> None:
    files = sorted(str(p.relative_to(NODE_SDK)) for p in (NODE_SDK / "test").glob("*.test.mjs"))
    assert len(files) >= 3, files
    env = {**os.environ, "HOSTD_PYTHON": sys.executable}
    for var in ("HOSTD_SOCKET", "HOSTD_CONFIG", "NODE_OPTIONS"):
        env.pop(var, None)
    proc = await asyncio.create_subprocess_exec(
        node(),
        "--test",
        "--test-reporter=spec",
        "--test-timeout=60000",
        *files,
        cwd=NODE_SDK,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(300):
        out, _ = await proc.communicate()
    output = out.decode(errors="replace")
    assert proc.returncode == 0, output
    assert "\u2139 fail 0" in output, output
    passed = int(output.split("\u2139 pass ")[1].split()[0])
    assert passed >= 25, output
    for name in (
        "aborting a call sends $/cancelRequest: hostd drops the upstream request",
        "hostd's $/cancelRequest aborts the handler's signal",
        "a cancelled request is answered -32800 even when its handler returns",
        "a failing producer closes its stream with the error's text",
        "an answer line of more than 128 MiB, in small pieces, is read whole",
        "under hostd run, console.log and process.stdout.write go to stderr",
    ):
        assert f"✔ {name}" in output, output


# The management example -----------------------------------------------------------------------


async def test_management_example_logs_lists_fetches_and_runs_a_model(stack: Stack) -> None:
    stack.proxy.reset()
    seen = len(stack.hp.stderr_lines)
    url = f"{stack.upstream.url}/page"
    async with node_example(stack, "management", "demo-management-node"), await stack.hp.connect_control() as ctl:
        answer = await invoke(
            ctl,
            "demo-management-node",
            "management.handle",
            {"url": url, "model": "gpt-demo"},
            stream=False,
            request_id="req-node-1",
        )
    assert answer["result"] == {
        "plugin": "demo-management-node",
        "auth_files": 2,
        "http_status": 200,
        "http_body": "hello from upstream",
        "model_status": 200,
        "model_body": answer["result"]["model_body"],
    }
    model_body = json.loads(answer["result"]["model_body"])
    assert model_body["object"] == "fake.completion"
    assert (model_body["path"], model_body["model"]) == ("/v1/chat/completions", "gpt-demo")

    [received] = stack.proxy.received
    assert received.header("X-CPA-Host-Callback-ID")  # the host_callback_id the plugin was given
    assert received.header("X-CPA-Skip-Plugin") == "demo-management-node"  # its hello set the id
    assert received.json() == {"model": "gpt-demo", "messages": [{"role": "user", "content": "hello"}]}
    assert [r.method for r in stack.upstream.requests if r.path == "/page"][-1] == "GET"

    log = await wait_log_after(stack.hp, seen, '"msg":"management.handle"', '"plugin":"demo-management-node"')
    assert (log["level"], log["url"]) == ("info", url)
    assert log["request_id"] == "req-node-1"  # host.log carried the invoke's host_callback_id


async def test_management_example_reports_a_failed_host_call_as_an_error(stack: Stack) -> None:
    async with node_example(stack, "management", "demo-management-node"), await stack.hp.connect_control() as ctl:
        with pytest.raises(RpcError) as failed:
            await invoke(
                ctl,
                "demo-management-node",
                "management.handle",
                {"url": "http://169.254.169.254/latest", "model": "m"},
                stream=False,
            )
    # hostd refused the fetch (-32002 forbidden); a host call's RpcError thrown on by the handler
    # goes back unchanged.
    assert failed.value.code == -32002, failed.value.error
    assert failed.value.error["data"]["code"] == "forbidden"


# The executor example -------------------------------------------------------------------------


async def test_executor_example_streams_the_model_answer_through_emit(stack: Stack) -> None:
    stack.proxy.reset()
    async with node_example(stack, "executor", "demo-executor-node"), await stack.hp.connect_control() as ctl:
        answer = await invoke(
            ctl, "demo-executor-node", "executor.execute_stream", {"model": "gpt-demo", "prompt": "hi"}, stream=True
        )
        assert answer["result"] == {}
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert joined(reads) == b"".join(default_events("/v1/chat/completions", "gpt-demo"))
    assert reads[-1] == {"payload": None, "error": "", "done": True}
    assert all(r["error"] == "" for r in reads)
    [received] = stack.proxy.received
    assert received.header("X-CPA-Host-Callback-ID")
    assert received.header("X-CPA-Skip-Plugin") == "demo-executor-node"
    assert received.json() == {"model": "gpt-demo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def test_executor_example_closes_its_stream_with_the_upstream_error(stack: Stack) -> None:
    stack.proxy.reset()
    first = sse_event({"choices": [{"delta": {"content": "par"}}]})
    stack.proxy.plan(Sse([first, sse_event({"never": "sent"})], fail_after=1))
    async with node_example(stack, "executor", "demo-executor-node"), await stack.hp.connect_control() as ctl:
        answer = await invoke(
            ctl, "demo-executor-node", "executor.execute_stream", {"model": "m", "prompt": "p"}, stream=True
        )
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert joined(reads) == first
    assert reads[-1]["done"] is True
    assert reads[-1]["error"], reads  # the model stream's error text, passed on by the plugin
    assert all(r["error"] == "" for r in reads[:-1])


async def test_executor_example_closes_its_stream_when_the_model_call_fails(stack: Stack) -> None:
    stack.proxy.reset()
    stack.proxy.plan(Sse([], status=503, headers=[("Content-Type", "text/plain")]))
    async with node_example(stack, "executor", "demo-executor-node"), await stack.hp.connect_control() as ctl:
        answer = await invoke(
            ctl, "demo-executor-node", "executor.execute_stream", {"model": "m", "prompt": "p"}, stream=True
        )
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert reads[-1]["done"] is True
    assert "503" in reads[-1]["error"], reads  # host.model.execute_stream's own error text
