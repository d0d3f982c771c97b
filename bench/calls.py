"""Calls: ``host.log`` round trips through hostd vs the floor server, driven by the C client.

Every server runs as its own process on a Unix socket. The load client sends the same
``host.log`` request (level ``debug``) to all of them: hostd at ``--log-level info`` filters
it before formatting anything; one more hostd run at ``--log-level debug`` writes every
line (stderr to /dev/null), its ``[log]`` rate limit raised out of the way: at the default
1,000 lines a second per session (bursts of 2,000) all but ~2% of a run's lines would be
dropped by the limit and the row would measure the drop, not the write. Serial: one call at
a time, latency percentiles. Pipelined: ``depth`` calls kept in flight, calls/s.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

from bench.common import (
    LOG_BODY,
    PY,
    Settings,
    best,
    cpu_seconds,
    has_module,
    hostd_argv,
    loadgen,
    loadgen_serial,
    running,
    short_tmpdir,
    wait_for_socket,
)

# The log-written hostd's configuration: no line of a run is over the per-session rate limit.
UNLIMITED_LOG = "[log]\nplugin_lines_per_s = 1000000000\nplugin_burst = 1000000000\n"


def loops() -> list[str]:
    return ["asyncio", "uvloop"] if has_module("uvloop") else ["asyncio"]


def _serial(socket_path: str, settings: Settings, warmup: int) -> dict[str, Any]:
    return loadgen_serial(["--unix", socket_path], settings.serial_calls, warmup, LOG_BODY)


def _pipeline(socket_path: str, settings: Settings, pid: int) -> dict[str, Any]:
    cpu = cpu_seconds(pid)
    result = loadgen(
        ["--unix", socket_path],
        "--mode",
        "pipeline",
        "--count",
        str(settings.pipeline_calls),
        "--depth",
        str(settings.depth),
        "--warmup",
        "0",
        "--body",
        LOG_BODY,
    )
    # The server's own CPU time per call: what the call costs it, whatever else the machine runs.
    result["server_cpu_us_per_call"] = (cpu_seconds(pid) - cpu) / settings.pipeline_calls * 1e6
    return result


def run(settings: Settings) -> dict[str, Any]:
    """All servers run at once (idle ones cost nothing); runs go round-robin over them, so
    load from elsewhere on the machine hits every server alike, and the best run counts."""
    with short_tmpdir() as tmp, contextlib.ExitStack() as stack:
        sockets: dict[str, str] = {}
        pids: dict[str, int] = {}
        started: list[tuple[subprocess.Popen[bytes], Path]] = []
        unlimited = tmp / "log-written.toml"
        unlimited.write_text(UNLIMITED_LOG)
        for loop in loops():
            sock = tmp / f"floor-{loop}.sock"
            argv = [PY, "-m", "bench.floor", "--listen", str(sock), "--loop", loop]
            started.append((stack.enter_context(running(argv)), sock))
            sockets[f"floor/{loop}"] = str(sock)
            pids[f"floor/{loop}"] = started[-1][0].pid
            for written in (False, True):
                sock = tmp / f"hostd-{loop}-{int(written)}.sock"
                extra = ["--config", str(unlimited)] if written else []
                argv = hostd_argv(
                    listen=f"unix:{sock}", loop=loop, log_level="debug" if written else "info", extra=extra
                )
                started.append((stack.enter_context(running(argv)), sock))
                key = f"hostd/{loop}" + ("/log-written" if written else "")
                sockets[key] = str(sock)
                pids[key] = started[-1][0].pid
        for proc, sock in started:  # started together, waited for together
            wait_for_socket(sock, proc)
        serial_runs: dict[str, list[dict[str, Any]]] = {key: [] for key in sockets}
        pipeline_runs: dict[str, list[dict[str, Any]]] = {key: [] for key in sockets}
        for i in range(settings.repeats):
            for key, sock_path in sockets.items():
                warmup = settings.warmup if i == 0 else settings.warmup // 4
                serial_runs[key].append(_serial(sock_path, settings, warmup))
                pipeline_runs[key].append(_pipeline(sock_path, settings, pids[key]))
    servers: dict[str, dict[str, Any]] = {}
    for key in sockets:
        servers[key] = {
            "serial": best(serial_runs[key], "p50_us", lowest=True),
            "pipeline": best(pipeline_runs[key], "calls_per_s"),
            "pipeline_cpu_us_per_call": min(r["server_cpu_us_per_call"] for r in pipeline_runs[key]),
            "serial_p50_us_runs": [r["p50_us"] for r in serial_runs[key]],
            "pipeline_calls_per_s_runs": [r["calls_per_s"] for r in pipeline_runs[key]],
        }
    ratios: dict[str, dict[str, float | None]] = {}
    for key, figures in servers.items():
        if not key.startswith("hostd/"):
            continue
        floor = servers[f"floor/{key.split('/')[1]}"]
        ratios[key] = {
            "serial_p50_vs_floor": figures["serial"]["p50_us"] / floor["serial"]["p50_us"],
            "serial_p99_vs_floor": figures["serial"]["p99_us"] / floor["serial"]["p99_us"],
            "pipeline_vs_floor": figures["pipeline"]["calls_per_s"] / floor["pipeline"]["calls_per_s"],
            # floor CPU per call / hostd CPU per call: the throughput ratio if both had a core to themselves
            # (None when a run was too short for the 10 ms CPU clock to see it)
            "pipeline_cpu_vs_floor": floor["pipeline_cpu_us_per_call"] / figures["pipeline_cpu_us_per_call"]
            if figures["pipeline_cpu_us_per_call"] > 0 and floor["pipeline_cpu_us_per_call"] > 0
            else None,
        }
    return {
        "request": "{" + '"jsonrpc":"2.0","id":N,' + LOG_BODY + "}",
        "depth": settings.depth,
        "servers": servers,
        "ratios": ratios,
    }
