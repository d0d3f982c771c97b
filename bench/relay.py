"""Stream relay: a large body through ``host.http.do_stream`` + ``stream_read`` vs httpx directly.

The body comes from ``bench/upstream.py`` (its own process) on 127.0.0.1. Through hostd,
the C client opens the stream and reads it to the end, counting the bytes in the base64
payloads: once with one read at a time (as a simple plugin reads) and once with
``relay_depth`` reads in flight (hostd serves concurrent reads of one stream in order).
Directly, the bench process reads the same URL with one ``httpx.AsyncClient``
(``aiter_raw``), under the same event loop hostd runs on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench.common import (
    BenchError,
    Settings,
    UpstreamProcess,
    best,
    has_module,
    hostd_argv,
    loadgen,
    running,
    short_tmpdir,
)


async def _read_direct(url: str) -> dict[str, Any]:
    timeout = httpx.Timeout(30.0, read=None)
    started = time.perf_counter()
    size = 0
    async with httpx.AsyncClient(trust_env=False, timeout=timeout) as client, client.stream("GET", url) as response:
        async for chunk in response.aiter_raw():
            size += len(chunk)
    elapsed = time.perf_counter() - started
    return {"bytes": size, "elapsed_s": elapsed, "mb_per_s": size / 1e6 / elapsed}


def _direct(url: str, loop: str) -> dict[str, Any]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(_read_direct(url))
    return asyncio.run(_read_direct(url))


def _via_hostd(sock: str, url: str, depth: int, timeout: float) -> dict[str, Any]:
    body = '"method":"host.http.do_stream","params":{"url":"' + url + '"}'
    return loadgen(
        ["--unix", sock],
        "--mode",
        "stream",
        "--body",
        body,
        "--read-method",
        "host.http.stream_read",
        "--depth",
        str(depth),
        timeout=timeout,
    )


def run(settings: Settings) -> dict[str, Any]:
    loops = ["asyncio", "uvloop"] if has_module("uvloop") else ["asyncio"]
    size = settings.relay_bytes
    out: dict[str, Any] = {"bytes": size, "depth": settings.relay_depth, "loops": {}}
    with UpstreamProcess() as up, short_tmpdir() as tmp:
        url = f"{up.url}/body?size={size}"
        for loop in loops:
            figures: dict[str, Any] = {}
            depths = sorted({1, settings.relay_depth})
            runs: dict[str, list[dict[str, Any]]] = {"direct_httpx": [], **{f"hostd_depth{d}": [] for d in depths}}
            sock = tmp / f"hostd-{loop}.sock"
            with running(hostd_argv(listen=f"unix:{sock}", loop=loop), socket_path=sock):
                for _ in range(settings.relay_repeats):  # interleaved, so outside load hits all alike
                    runs["direct_httpx"].append(_direct(url, loop))
                    for depth in depths:
                        runs[f"hostd_depth{depth}"].append(
                            _via_hostd(str(sock), url, depth, settings.section_timeout_s)
                        )
            for key, key_runs in runs.items():
                figures[key] = best(key_runs, "mb_per_s")
            for key, value in figures.items():
                if value["bytes"] != size:
                    raise BenchError(f"{loop} {key}: read {value['bytes']} bytes, expected {size}")
            direct_mb = figures["direct_httpx"]["mb_per_s"]
            figures["ratios"] = {
                f"hostd_depth{depth}_vs_direct": figures[f"hostd_depth{depth}"]["mb_per_s"] / direct_mb
                for depth in depths
            }
            out["loops"][loop] = figures
    return out
