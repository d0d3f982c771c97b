"""Scale: many concurrent HTTP streams held open through one hostd, then one disconnect.

The upstream (``bench/upstream.py``, its own process) answers ``/hold`` with headers and a
first chunk, then holds the response open. The bench opens ``scale_streams`` streams with
``host.http.do_stream`` over ``scale_connections`` plugin connections, reads hostd's RSS
before and after, then drops every connection at once and asks the upstream when the last
of its held responses was dropped (the upstream's clock, CLOCK_MONOTONIC, same as ours).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import (
    BenchError,
    Settings,
    UpstreamProcess,
    has_module,
    hostd_argv,
    raise_nofile_limit,
    rss_bytes,
    running,
    short_tmpdir,
)

WARMUP_STREAMS = 32


async def _status(control: str) -> dict[str, Any] | None:
    """``hostd.status`` on the control socket, or None when hostd does not serve it (yet)."""
    from hostd.client import Client, RpcError

    try:
        async with await Client.connect(f"unix:{control}") as c:
            result: dict[str, Any] = await c.call("hostd.status", {}, timeout=5)
            return result
    except (RpcError, OSError, TimeoutError):
        return None


def _open_streams(status: dict[str, Any]) -> int:
    return sum(sum(s.get("streams", {}).values()) for s in status.get("sessions", []))


async def _measure(settings: Settings, up: UpstreamProcess, sock: str, control: str, pid: int) -> dict[str, Any]:
    from hostd.client import Client

    n = settings.scale_streams
    hold = {"url": f"{up.url}/hold"}
    clients = [await Client.connect(f"unix:{sock}") for _ in range(settings.scale_connections)]
    try:
        # Warm up: the first streams pay for imports and pools; keep that out of the growth.
        for _ in range(WARMUP_STREAMS):
            opened = await clients[0].call("host.http.do_stream", hold, timeout=10)
            first = await clients[0].call("host.http.stream_read", {"stream_id": opened["stream_id"]}, timeout=10)
            if "payload" not in first:
                raise BenchError(f"unexpected first read: {first}")
            await clients[0].call("host.http.stream_close", {"stream_id": opened["stream_id"]}, timeout=10)
        await asyncio.to_thread(up.command, "wait_hold_zero 10")
        await asyncio.sleep(0.5)
        rss_before = rss_bytes(pid)

        gate = asyncio.Semaphore(settings.scale_open_concurrency)
        started = time.monotonic()
        deadline = started + settings.scale_open_budget_s

        async def open_one(i: int) -> str | None:
            async with gate:
                if time.monotonic() > deadline:
                    return None  # over the time budget: report how many opened
                result = await clients[i % len(clients)].call("host.http.do_stream", hold, timeout=120)
            stream_id: str = result["stream_id"]
            return stream_id

        ids = [i for i in await asyncio.gather(*(open_one(i) for i in range(n))) if i is not None]
        open_s = time.monotonic() - started
        opened = len(ids)
        held = await asyncio.to_thread(up.command, f"wait_hold {opened} 30")
        if not held["ok"] or len(set(ids)) != opened or opened == 0:
            raise BenchError(f"expected {opened} held responses, upstream reports {held}")
        # Let every producer take its first chunk into its buffer, then sample RSS.
        rss_open = 0
        for _ in range(5):
            await asyncio.sleep(0.2)
            rss_open = max(rss_open, rss_bytes(pid))
        status_open = await _status(control)

        disconnected = time.monotonic()
        for client in clients:
            client.writer.transport.abort()
        dropped = await asyncio.to_thread(up.command, f"wait_hold_zero {settings.scale_close_budget_s}")
        close_s = dropped["last_close"] - disconnected if dropped["ok"] else time.monotonic() - disconnected
        status_closed: dict[str, Any] | None = None
        streams_left: int | None = None
        status = await _status(control)
        if status is not None:
            deadline = time.monotonic() + 10
            while _open_streams(status) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                status = await _status(control) or status
            status_closed = status
            streams_left = _open_streams(status)
        await asyncio.sleep(0.5)
        rss_after = rss_bytes(pid)
    finally:
        for client in clients:
            await client.aclose()
    return {
        "streams": opened,
        "streams_wanted": n,
        "open_budget_exceeded": opened < n,
        "connections": settings.scale_connections,
        "open_s": open_s,
        "opens_per_s": n / open_s,
        "rss_before_bytes": rss_before,
        "rss_open_bytes": rss_open,
        "rss_after_close_bytes": rss_after,
        "rss_per_stream_bytes": (rss_open - rss_before) / opened,
        "projected_rss_10k_bytes": rss_before + (rss_open - rss_before) / opened * 10_000,
        "close_all_s": close_s,
        "all_dropped": dropped["ok"],
        "still_open_at_budget": dropped["hold_open"],
        "upstream_after_close": dropped,
        "hostd_status_open_streams": _open_streams(status_open) if status_open else None,
        "hostd_status_streams_left": streams_left,
        "hostd_status_available": status_closed is not None,
    }


def run(settings: Settings) -> dict[str, Any]:
    limit = raise_nofile_limit()
    if limit < settings.scale_streams + 256:
        raise BenchError(f"open-file limit {limit} is too low for {settings.scale_streams} streams")
    loop = "uvloop" if has_module("uvloop") else "asyncio"
    limits = str(max(20_000, 2 * settings.scale_streams))
    with UpstreamProcess() as up, short_tmpdir() as tmp:
        sock = tmp / "hostd.sock"
        control = tmp / "control.sock"
        argv = hostd_argv(
            listen=f"unix:{sock}",
            loop=loop,
            extra=["--control", f"unix:{control}", "--max-streams", limits, "--max-in-flight", limits],
        )
        with running(argv, socket_path=sock) as proc:
            result = asyncio.run(_measure(settings, up, str(sock), str(control), proc.pid))
            result["hostd_alive_after"] = proc.poll() is None
    result["loop"] = loop
    return result
