"""Footprint: what one hostd costs before a plugin uses it, and what each family's first call adds.

The proxy runs one hostd per plugin, so start-up time and idle memory are paid per plugin.
Against the baseline ``python -c "import asyncio, socket, msgspec, orjson"`` (the imports
any asyncio JSON server needs), measured in the same run and interleaved with hostd's:

- **serve**: ``hostd serve --listen unix:PATH`` (model and auth families configured, so
  their lazy loading is what is measured) from spawn until the socket accepts a connection
  (polled every millisecond); the baseline from spawn until it has imported its modules
  (it then writes one byte and waits). Idle RSS: ``VmRSS`` 0.2 s after that point. CPU:
  the process's user + system time from spawn to exit, stopped (SIGTERM, or its stdin
  closed) right after that: the steadier figure on a shared machine.
- **run**: ``hostd run -- PY -S -c PLUGIN`` from spawn until the trivial plugin has the answer
  to its first call (``host.log``), stamped by the plugin with CLOCK_MONOTONIC (the same
  clock as the bench's).
- **first call**: a fresh ``hostd serve`` per family; the first call after ready (which
  loads the family: httpx, the model backend, the credential store) and the median of the
  next ones, over one Unix socket connection: ``host.log``, ``host.http.do`` to
  ``bench/upstream.py``, ``host.model.execute`` to the fake proxy, ``host.auth.list`` of a
  directory with one credential.

Every child runs with one bytecode cache (``bench/.build/pycache``, ``PYTHONPYCACHEPREFIX``)
filled by a warm-up start, so no run compiles source: with ``PYTHONDONTWRITEBYTECODE`` set
(as in some shells) a module edited since its ``.pyc`` was written is compiled on every start.
"""

from __future__ import annotations

import base64
import os
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    BUILD_DIR,
    PY,
    BenchError,
    Settings,
    UpstreamProcess,
    child_env,
    has_module,
    hostd_argv,
    hostd_source,
    rss_bytes,
    short_tmpdir,
    stop_process,
)

BASELINE = "import asyncio, socket, msgspec, orjson, sys; sys.stdout.write('r'); sys.stdout.flush(); sys.stdin.read()"
# The trivial plugin of ``hostd run``: one host.log call on its stdout, the answer on its stdin.
PLUGIN = (
    "import os, sys, time\n"
    'os.write(1, b\'{"jsonrpc":"2.0","id":1,"method":"host.log","params":{"level":"debug","message":"hi"}}\\n\')\n'
    "line = sys.stdin.buffer.readline()\n"
    "stamp = time.monotonic()\n"
    "open(sys.argv[1], 'w').write(repr(stamp) if b'\"result\"' in line else 'error')\n"
)
STEADY_CALLS = 20
IDLE_S = 0.2


def _env() -> dict[str, str]:
    env = child_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(BUILD_DIR / "pycache")
    return env


def _spawn(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=_env(), cwd=hostd_source(), stderr=subprocess.DEVNULL, **kw)


def _stop_cpu_ms(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM ``proc`` and reap it; its CPU time (user + system, all threads) from spawn to exit."""
    proc.terminate()
    killer = threading.Timer(10.0, proc.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (usage.ru_utime + usage.ru_stime) * 1e3


def _baseline() -> dict[str, float]:
    started = time.monotonic()
    proc = _spawn([PY, "-c", BASELINE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        if proc.stdout.read(1) != b"r":
            raise BenchError("the baseline process did not start")
        ready = time.monotonic() - started
        time.sleep(IDLE_S)
        rss = rss_bytes(proc.pid)
        proc.stdin.close()
        return {"ready_ms": ready * 1e3, "rss_bytes": rss, "cpu_ms": _stop_cpu_ms(proc)}
    finally:
        proc.stdin.close()
        stop_process(proc)


def _wait_accepting(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(path))
                return
            except OSError:
                pass
        if proc.poll() is not None:
            raise BenchError(f"hostd exited with {proc.returncode} before listening")
        time.sleep(0.001)
    raise BenchError(f"hostd not accepting on {path} after {timeout:g} s")


def _serve_argv(sock: Path, loop: str, extra: list[str]) -> list[str]:
    return hostd_argv(listen=f"unix:{sock}", loop=loop, extra=extra)


def _serve(tmp: Path, loop: str, extra: list[str]) -> dict[str, float]:
    sock = tmp / f"fp-{loop}.sock"
    started = time.monotonic()
    proc = _spawn(_serve_argv(sock, loop, extra), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        _wait_accepting(sock, proc)
        ready = time.monotonic() - started
        time.sleep(IDLE_S)
        rss = rss_bytes(proc.pid)
        return {"ready_ms": ready * 1e3, "rss_bytes": rss, "cpu_ms": _stop_cpu_ms(proc)}
    finally:
        stop_process(proc)


def _run(tmp: Path, loop: str) -> dict[str, float]:
    stamp = tmp / f"stamp-{loop}"
    stamp.unlink(missing_ok=True)
    argv = [PY, "-m", "hostd", "run", "--loop", loop, "--auth-dir", "", "--model-base-url", ""]
    started = time.monotonic()
    proc = _spawn([*argv, "--", PY, "-S", "-c", PLUGIN, str(stamp)], stdin=subprocess.DEVNULL)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        raise BenchError("hostd run did not end after its plugin's first call") from None
    text = stamp.read_text() if stamp.exists() else ""
    if not text or text == "error":
        raise BenchError(f"hostd run's plugin got no answer (exit {proc.returncode})")
    return {"first_answer_ms": (float(text) - started) * 1e3}


class _Conn:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        self.next_id = 0

    def call_us(self, method: str, params: dict[str, Any]) -> float:
        self.next_id += 1
        line = orjson.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}) + b"\n"
        started = time.perf_counter()
        self.sock.sendall(line)
        answer = self.file.readline()
        elapsed = time.perf_counter() - started
        if b'"result"' not in answer:
            raise BenchError(f"{method}: {answer[:300]!r}")
        return elapsed * 1e6

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _first_call(tmp: Path, loop: str, extra: list[str], method: str, params: dict[str, Any]) -> dict[str, float]:
    sock = tmp / f"fc-{loop}.sock"
    proc = _spawn(_serve_argv(sock, loop, extra), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        _wait_accepting(sock, proc)
        conn = _Conn(sock)
        try:
            first = conn.call_us(method, params)
            steady = statistics.median(conn.call_us(method, params) for _ in range(STEADY_CALLS))
        finally:
            conn.close()
        return {"first_us": first, "steady_us": steady}
    finally:
        stop_process(proc)


def _summary(runs: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [r[key] for r in runs]
    return {key: min(values), f"{key}_max": max(values), f"{key}_median": statistics.median(values)}


def run(settings: Settings) -> dict[str, Any]:
    loops = ["asyncio", "uvloop"] if has_module("uvloop") else ["asyncio"]
    repeats = max(settings.repeats, 1)
    out: dict[str, Any] = {"repeats": repeats, "loops": {}}
    with UpstreamProcess() as up, UpstreamProcess("bench.fake_proxy_server") as proxy, short_tmpdir() as tmp:
        auth = tmp / "auth"
        auth.mkdir()
        (auth / "bench.json").write_text('{"type":"claude","email":"bench@example.com"}')
        os.chmod(auth / "bench.json", 0o600)
        extra = ["--auth-dir", str(auth), "--model-base-url", proxy.url]
        families: dict[str, tuple[str, dict[str, Any]]] = {
            "host.log": ("host.log", {"level": "debug", "message": "first"}),
            "host.http.do": ("host.http.do", {"method": "GET", "url": f"{up.url}/body?size=1024"}),
            "host.model.execute": (
                "host.model.execute",
                {
                    "entry_protocol": "openai",
                    "model": "bench",
                    "stream": False,
                    "body": base64.b64encode(b'{"model":"bench","messages":[]}').decode(),
                },
            ),
            "host.auth.list": ("host.auth.list", {}),
        }
        # Warm-up: fill the bytecode cache for every child.
        _baseline()
        for loop in loops:
            _serve(tmp, loop, extra)
            _run(tmp, loop)
        base_runs: list[dict[str, float]] = []
        serve_runs: dict[str, list[dict[str, float]]] = {loop: [] for loop in loops}
        run_runs: dict[str, list[dict[str, float]]] = {loop: [] for loop in loops}
        first_runs: dict[str, dict[str, list[dict[str, float]]]] = {loop: {f: [] for f in families} for loop in loops}
        for _ in range(repeats):  # interleaved, so outside load hits every figure alike
            base_runs.append(_baseline())
            for loop in loops:
                serve_runs[loop].append(_serve(tmp, loop, extra))
                run_runs[loop].append(_run(tmp, loop))
                for fam, (method, params) in families.items():
                    first_runs[loop][fam].append(_first_call(tmp, loop, extra, method, params))
    base = {**_summary(base_runs, "ready_ms"), **_summary(base_runs, "rss_bytes"), **_summary(base_runs, "cpu_ms")}
    out["baseline"] = base
    for loop in loops:
        serve = {
            **_summary(serve_runs[loop], "ready_ms"),
            **_summary(serve_runs[loop], "rss_bytes"),
            **_summary(serve_runs[loop], "cpu_ms"),
        }
        run_fig = _summary(run_runs[loop], "first_answer_ms")
        first = {
            fam: {
                "first_us": min(r["first_us"] for r in rs),
                "first_us_max": max(r["first_us"] for r in rs),
                "steady_us": min(r["steady_us"] for r in rs),
            }
            for fam, rs in first_runs[loop].items()
        }
        out["loops"][loop] = {
            "serve": serve,
            "run": run_fig,
            "first_call": first,
            "ratios": {
                "serve_ready_vs_baseline": serve["ready_ms"] / base["ready_ms"],
                "serve_cpu_vs_baseline": serve["cpu_ms"] / base["cpu_ms"],
                "run_first_answer_vs_baseline": run_fig["first_answer_ms"] / base["ready_ms"],
            },
            "rss_over_baseline_bytes": serve["rss_bytes"] - base["rss_bytes"],
        }
    return out
