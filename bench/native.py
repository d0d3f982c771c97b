"""Native: a host call from a native plugin thread (through the worker and hostd) vs an ordinary plugin's.

The native side is ``hostd run --native`` with the worker tests' C plugin
(``tests/native/testplugin.c``, built here with ``cc -O2``): its ``bench.host_log`` method makes N
sequential ``host.log`` calls from a thread the plugin made and returns each round trip's time,
taken in C around ``host->call`` (plugin thread → worker → pipe → hostd → pipe → worker → plugin
thread). The ordinary side is the C load client speaking JSON-RPC to ``hostd serve`` on its stdio
pipes (the same transport a worker has), sending the same ``host.log`` request one at a time. The
ratio of the two is the worker's overhead. Also measured: the invoke round trip, ``hostd.invoke``
of the plugin's ``echo`` from the control socket (C load client → hostd → worker → plugin → back).

hostd runs at ``--log-level info`` on both sides, so the ``debug`` line is filtered before
formatting. Each figure is the best of ``repeats`` runs (the machine is shared).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    PY,
    ROOT,
    BenchError,
    Settings,
    best,
    has_module,
    loadgen_serial,
    running,
    short_tmpdir,
    wait_for_socket,
)

PLUGIN_SRC = ROOT / "tests" / "native" / "testplugin.c"
PLUGIN_ID = "native-bench"
# The request the native plugin sends (testplugin.c's bench.host_log), sent by the load client too.
NATIVE_LOG_BODY = '"method":"host.log","params":{"level":"debug","message":"bench"}'
INVOKE_BODY = '"method":"hostd.invoke","params":{"plugin_id":"' + PLUGIN_ID + '","method":"echo","params":{"n":1}}'


def loops() -> list[str]:
    return ["asyncio", "uvloop"] if has_module("uvloop") else ["asyncio"]


def build_plugin(out_dir: Path) -> Path:
    """``cc -O2 -shared`` the test plugin into ``out_dir`` (its file name gives the plugin id)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler (cc) found: the native plugin is built at bench time")
    out = out_dir / f"{PLUGIN_ID}.so"
    cmd = [cc, "-O2", "-shared", "-fPIC", "-pthread", "-o", str(out), str(PLUGIN_SRC)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise BenchError(f"building the native plugin failed:\n{proc.stderr}")
    return out


def call(control: Path, method: str, params: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """One JSON-RPC call on the control socket; the answer object (result or error)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(control))
        s.sendall(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}) + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                raise BenchError(f"control socket closed before answering {method}")
            data += chunk
    answer: dict[str, Any] = orjson.loads(data)
    return answer


def invoke(control: Path, method: str, params: dict[str, Any]) -> dict[str, Any]:
    answer = call(control, "hostd.invoke", {"plugin_id": PLUGIN_ID, "method": method, "params": params})
    if "error" in answer:
        raise BenchError(f"hostd.invoke {method} failed: {answer['error']}")
    result: dict[str, Any] = answer["result"]["result"]
    return result


def wait_ready(control: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the worker has said hello (invokes fail ``plugin_unavailable`` before that)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"hostd run --native exited with {proc.returncode}")
        answer = call(control, "hostd.invoke", {"plugin_id": PLUGIN_ID, "method": "echo", "params": {}})
        if "result" in answer:
            return
        time.sleep(0.05)
    raise BenchError(f"the native plugin did not come up within {timeout:g} s")


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50/p90/p99/max in µs, as the load client computes them (nearest rank)."""
    values = sorted(samples_ns)
    n = len(values)
    if n == 0:
        raise BenchError("no samples")

    def pct(p: float) -> float:
        return values[min(n - 1, int(p * (n - 1) + 0.5))] / 1000.0

    total = sum(values)
    return {
        "count": n,
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "max_us": values[-1] / 1000.0,
        "mean_us": total / n / 1000.0,
        "calls_per_s": n / (total / 1e9) if total else 0.0,
    }


def _native_host_log(control: Path, settings: Settings, warmup: int) -> dict[str, Any]:
    if warmup:
        invoke(control, "bench.host_log", {"n": warmup})
    result = invoke(control, "bench.host_log", {"n": settings.serial_calls, "samples": 1})
    if result.get("ok") != settings.serial_calls:
        raise BenchError(f"bench.host_log: {result.get('ok')} of {settings.serial_calls} host calls succeeded")
    return percentiles(result["samples_ns"])


def _ordinary_host_log(loop: str, settings: Settings, warmup: int) -> dict[str, Any]:
    argv = [PY, "-m", "hostd", "serve", "--loop", loop, "--log-level", "info", "--auth-dir", "", "--model-base-url", ""]
    return loadgen_serial(["--quiet-stderr", "--exec", *argv], settings.serial_calls, warmup, NATIVE_LOG_BODY)


def _invoke(control: Path, settings: Settings, warmup: int) -> dict[str, Any]:
    return loadgen_serial(["--unix", str(control)], settings.serial_calls, warmup, INVOKE_BODY)


def run(settings: Settings) -> dict[str, Any]:
    """Per loop: one ``hostd run --native`` (its worker stays up across runs); runs alternate between
    the native and the ordinary side, so load from elsewhere hits both alike."""
    out: dict[str, Any] = {"request": "{" + '"jsonrpc":"2.0","id":N,' + NATIVE_LOG_BODY + "}", "loops": {}}
    with short_tmpdir() as tmp, contextlib.ExitStack() as stack:
        lib = build_plugin(tmp)
        started: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        for loop in loops():
            control = tmp / f"ctl-{loop}.sock"
            argv = [
                *[PY, "-m", "hostd", "run", "--native", str(lib), "--control", f"unix:{control}"],
                *["--loop", loop, "--log-level", "info", "--auth-dir", "", "--model-base-url", ""],
            ]
            started[loop] = (stack.enter_context(running(argv)), control)
        for proc, control in started.values():
            wait_for_socket(control, proc)
            wait_ready(control, proc)
        for loop, (_, control) in started.items():
            native: list[dict[str, Any]] = []
            ordinary: list[dict[str, Any]] = []
            invokes: list[dict[str, Any]] = []
            for i in range(settings.repeats):
                warmup = settings.warmup if i == 0 else settings.warmup // 4
                native.append(_native_host_log(control, settings, warmup))
                ordinary.append(_ordinary_host_log(loop, settings, warmup))
                invokes.append(_invoke(control, settings, warmup))
            n, o = best(native, "p50_us", lowest=True), best(ordinary, "p50_us", lowest=True)
            out["loops"][loop] = {
                "native_host_log": n,
                "ordinary_host_log": o,
                "invoke": best(invokes, "p50_us", lowest=True),
                "native_p50_us_runs": [r["p50_us"] for r in native],
                "ordinary_p50_us_runs": [r["p50_us"] for r in ordinary],
                "ratios": {
                    "host_log_p50_native_vs_ordinary": n["p50_us"] / o["p50_us"],
                    "host_log_p99_native_vs_ordinary": n["p99_us"] / o["p99_us"],
                },
            }
    return out
