"""Peer: the MCP Python SDK over stdio vs hostd over stdio, each measured with its own client.

The MCP server (``bench/mcp_server.py``) is spawned by the SDK's own ``Client`` and
answers ``ping`` (the cheapest request it has; the SDK only allows it in ``legacy`` mode)
and a ``tools/call`` of an ``echo`` tool. hostd (``hostd serve`` on stdio) answers
``host.log`` (filtered), driven by ``hostd.client.Client``, the Python client hostd ships;
and, to show what hostd itself can do over pipes, by the C load client too.
Serial: one call at a time. Concurrent: ``peer_concurrency`` tasks, each calling in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import (
    LOG_BODY,
    PY,
    ROOT,
    BenchError,
    Settings,
    best,
    child_env,
    has_module,
    hostd_argv,
    hostd_source,
    loadgen,
)

Call = Callable[[], Awaitable[Any]]

LOG_PARAMS = {"level": "debug", "message": "bench call", "fields": {"n": 1, "k": "v"}}


async def _serial(call: Call, count: int) -> dict[str, Any]:
    latencies: list[float] = []
    clock = time.perf_counter
    started = clock()
    for _ in range(count):
        t = clock()
        await call()
        latencies.append(clock() - t)
    elapsed = clock() - started
    latencies.sort()
    return {
        "count": count,
        "elapsed_s": elapsed,
        "calls_per_s": count / elapsed,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6,
    }


async def _concurrent(call: Call, count: int, concurrency: int) -> dict[str, Any]:
    per_task = max(1, count // concurrency)

    async def worker() -> None:
        for _ in range(per_task):
            await call()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    elapsed = time.perf_counter() - started
    total = per_task * concurrency
    return {"count": total, "concurrency": concurrency, "elapsed_s": elapsed, "calls_per_s": total / elapsed}


async def _warm(call: Call, count: int) -> None:
    for _ in range(count):
        await call()


async def _mcp(settings: Settings) -> dict[str, Any]:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(
        command=PY, args=["-m", "bench.mcp_server"], cwd=str(ROOT), env={"PYTHONPATH": str(ROOT)}
    )
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ping is deprecated in the newest protocol revision
        async with Client(params, mode="legacy") as client:
            await _warm(client.send_ping, 50)
            out["ping_serial"] = await _serial(client.send_ping, settings.peer_serial)
            out["ping_concurrent"] = await _concurrent(
                client.send_ping, settings.peer_concurrent, settings.peer_concurrency
            )

            async def echo() -> Any:
                return await client.call_tool("echo", {"text": "hi"})

            await _warm(echo, 20)
            out["tool_serial"] = await _serial(echo, settings.peer_serial)
            out["tool_concurrent"] = await _concurrent(echo, settings.peer_concurrent, settings.peer_concurrency)
        out["protocol"] = "legacy (initialize handshake); ping and tools/call echo"
    return out


async def _hostd_python_client(settings: Settings, loop: str) -> dict[str, Any]:
    from hostd.client import Client

    proc = await asyncio.create_subprocess_exec(
        *hostd_argv(listen=None, loop=loop),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=child_env(),
        cwd=hostd_source(),
    )
    assert proc.stdout is not None and proc.stdin is not None
    client = Client(proc.stdout, proc.stdin)  # type: ignore[arg-type]
    try:

        async def log() -> Any:
            return await client.call("host.log", LOG_PARAMS)

        await _warm(log, 500)
        serial = [await _serial(log, settings.stdio_serial) for _ in range(settings.repeats)]
        concurrent = [
            await _concurrent(log, settings.stdio_concurrent, settings.peer_concurrency)
            for _ in range(settings.repeats)
        ]
    finally:
        await client.aclose()
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return {"serial": best(serial, "calls_per_s"), "concurrent": best(concurrent, "calls_per_s")}


def _hostd_c_client(settings: Settings, loop: str) -> dict[str, Any]:
    target = ["--quiet-stderr", "--exec", *hostd_argv(listen=None, loop=loop)]
    serial = [
        loadgen(
            target,
            "--mode",
            "serial",
            "--count",
            str(settings.stdio_serial),
            "--warmup",
            str(settings.warmup),
            "--body",
            LOG_BODY,
        )
        for _ in range(settings.repeats)
    ]
    pipeline = [
        loadgen(
            target,
            "--mode",
            "pipeline",
            "--count",
            str(settings.pipeline_calls),
            "--depth",
            str(settings.peer_concurrency),
            "--warmup",
            str(settings.warmup),
            "--body",
            LOG_BODY,
        )
        for _ in range(settings.repeats)
    ]
    return {"serial": best(serial, "calls_per_s"), "pipeline": best(pipeline, "calls_per_s")}


def run(settings: Settings) -> dict[str, Any]:
    if not has_module("mcp"):
        raise BenchError("not measured: the MCP SDK is not installed (pip install -e '.[bench]')")
    result: dict[str, Any] = {"concurrency": settings.peer_concurrency}
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    result["mcp"] = asyncio.run(_mcp(settings))
    loop = "uvloop" if has_module("uvloop") else "asyncio"
    result["hostd_loop"] = loop
    result["hostd_python_client"] = asyncio.run(_hostd_python_client(settings, loop))
    result["hostd_c_client"] = _hostd_c_client(settings, loop)
    mcp_serial = result["mcp"]["ping_serial"]["calls_per_s"]
    mcp_conc = result["mcp"]["ping_concurrent"]["calls_per_s"]
    py = result["hostd_python_client"]
    c = result["hostd_c_client"]
    result["ratios"] = {
        "python_client_serial_vs_mcp": py["serial"]["calls_per_s"] / mcp_serial,
        "python_client_concurrent_vs_mcp": py["concurrent"]["calls_per_s"] / mcp_conc,
        "c_client_serial_vs_mcp": c["serial"]["calls_per_s"] / mcp_serial,
        "c_client_pipeline_vs_mcp": c["pipeline"]["calls_per_s"] / mcp_conc,
    }
    return result
