"""Model stream relay: ``host.model.execute_stream`` + ``stream_read`` against a fake proxy's SSE.

The fake proxy is the one the model tests use (``tests/support/fake_proxy.py``), run in
its own process by ``bench/fake_proxy_server.py``: a streaming chat completion answers
``model_events`` small OpenAI-style chunk events, one HTTP chunk each. Through hostd, the
C client opens the model stream and reads it to the end (base64 decoded, events counted
at blank lines), with one read in flight and with ``relay_depth``. Directly, the bench
process posts the same request with httpx and counts the same events.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import orjson

from bench.common import (
    ROOT,
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

NOT_MERGED = "not measured: model family not merged"


def available() -> bool:
    if not (ROOT / "tests" / "support" / "fake_proxy.py").exists():
        return False
    try:
        from hostd.handlers import model
    except ImportError:
        return False
    names = {m.name for m in model.METHODS}
    return {"host.model.execute_stream", "host.model.stream_read"} <= names


def _request_body(events: int) -> bytes:
    return orjson.dumps(
        {"model": f"bench-{events}", "stream": True, "messages": [{"role": "user", "content": "count for me"}]}
    )


async def _read_direct(url: str, events: int) -> dict[str, Any]:
    timeout = httpx.Timeout(30.0, read=None)
    started = time.perf_counter()
    size = 0
    seen = 0
    last = b""
    async with (
        httpx.AsyncClient(trust_env=False, timeout=timeout) as client,
        client.stream(
            "POST",
            f"{url}/v1/chat/completions",
            content=_request_body(events),
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        async for chunk in response.aiter_raw():
            size += len(chunk)
            seen += (last + chunk).count(b"\n\n") - last.count(b"\n\n")
            last = chunk[-1:]
    elapsed = time.perf_counter() - started
    return {"bytes": size, "events": seen, "elapsed_s": elapsed, "events_per_s": seen / elapsed}


def _direct(url: str, events: int, loop: str) -> dict[str, Any]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(_read_direct(url, events))
    return asyncio.run(_read_direct(url, events))


def _via_hostd(sock: str, events: int, depth: int, timeout: float) -> dict[str, Any]:
    params = {
        "entry_protocol": "openai",
        "model": f"bench-{events}",
        "stream": True,
        "body": base64.b64encode(_request_body(events)).decode(),
    }
    body = '"method":"host.model.execute_stream","params":' + orjson.dumps(params).decode()
    return loadgen(
        ["--unix", sock],
        "--mode",
        "stream",
        "--decode",
        "--body",
        body,
        "--read-method",
        "host.model.stream_read",
        "--depth",
        str(depth),
        timeout=timeout,
    )


def run(settings: Settings) -> dict[str, Any]:
    if not available():
        raise BenchError(NOT_MERGED)
    loop = "uvloop" if has_module("uvloop") else "asyncio"
    events = settings.model_events
    depths = sorted({1, settings.relay_depth})
    out: dict[str, Any] = {"events": events, "loop": loop, "depths": depths}
    runs: dict[str, list[dict[str, Any]]] = {"direct_httpx": [], **{f"hostd_depth{d}": [] for d in depths}}
    with UpstreamProcess("bench.fake_proxy_server") as proxy, short_tmpdir() as tmp:
        sock = tmp / "hostd.sock"
        argv = hostd_argv(listen=f"unix:{sock}", loop=loop, extra=["--model-base-url", proxy.url])
        with running(argv, socket_path=sock):
            for _ in range(settings.relay_repeats):  # interleaved, so outside load hits all alike
                runs["direct_httpx"].append(_direct(proxy.url, events, loop))
                for depth in depths:
                    runs[f"hostd_depth{depth}"].append(_via_hostd(str(sock), events, depth, settings.section_timeout_s))
    for key, key_runs in runs.items():
        out[key] = best(key_runs, "events_per_s")
        if out[key]["events"] != events + 1:  # + the final "data: [DONE]"
            raise BenchError(f"{key}: counted {out[key]['events']} events, expected {events + 1}")
    direct = out["direct_httpx"]["events_per_s"]
    out["ratios"] = {f"hostd_depth{d}_vs_direct": out[f"hostd_depth{d}"]["events_per_s"] / direct for d in depths}
    return out
