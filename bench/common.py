"""Shared pieces of the benchmark: settings, the C load client, child processes, machine facts."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BUILD_DIR = BENCH_DIR / ".build"
LOADGEN_SRC = BENCH_DIR / "loadgen.c"
LOADGEN = BUILD_DIR / "loadgen"
PY = sys.executable
MiB = 1024 * 1024

# The request every call benchmark sends: host.log at level debug (filtered at info).
LOG_BODY = '"method":"host.log","params":{"level":"debug","message":"bench call","fields":{"n":1,"k":"v"}}'


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Counts and sizes for one run; ``full``, ``quick`` and ``tiny`` are the presets."""

    name: str = "full"
    repeats: int = 5  # runs per figure; the best is kept (the machine is shared)
    warmup: int = 2_000
    serial_calls: int = 10_000
    pipeline_calls: int = 200_000
    depth: int = 64
    peer_serial: int = 1_000
    peer_concurrent: int = 3_000
    peer_concurrency: int = 64
    stdio_serial: int = 10_000
    stdio_concurrent: int = 50_000
    relay_bytes: int = 256 * MiB
    relay_repeats: int = 3
    relay_depth: int = 4
    model_events: int = 30_000
    scale_streams: int = 10_000
    scale_connections: int = 10
    scale_open_concurrency: int = 256
    scale_open_budget_s: float = 150.0  # stop opening after this long (the figures say so)
    scale_close_budget_s: float = 60.0
    section_timeout_s: float = 180.0

    @classmethod
    def preset(cls, name: str) -> Settings:
        if name == "full":
            return cls()
        if name == "quick":
            return cls(
                name="quick",
                repeats=2,
                warmup=500,
                serial_calls=3_000,
                pipeline_calls=50_000,
                peer_serial=200,
                peer_concurrent=600,
                stdio_serial=2_000,
                stdio_concurrent=8_000,
                relay_bytes=32 * MiB,
                relay_repeats=1,
                model_events=10_000,
                scale_streams=1_000,
                scale_connections=4,
                scale_open_budget_s=30.0,
                scale_close_budget_s=20.0,
                section_timeout_s=60.0,
            )
        if name == "tiny":  # the smoke test: proves the harness works, measures nothing useful
            return cls(
                name="tiny",
                repeats=1,
                warmup=20,
                serial_calls=200,
                pipeline_calls=2_000,
                depth=16,
                peer_serial=20,
                peer_concurrent=64,
                peer_concurrency=8,
                stdio_serial=100,
                stdio_concurrent=400,
                relay_bytes=1 * MiB,
                relay_repeats=1,
                model_events=200,
                scale_streams=40,
                scale_connections=2,
                scale_open_concurrency=16,
                scale_open_budget_s=10.0,
                scale_close_budget_s=10.0,
                section_timeout_s=30.0,
            )
        raise ValueError(f"unknown preset {name!r}")


class BenchError(Exception):
    """A section could not produce its figures (a process failed to start, a count was wrong)."""


# The C load client ------------------------------------------------------------------------


def build_loadgen() -> Path:
    """Compile bench/loadgen.c with ``cc -O2`` into bench/.build/ (only when the source changed)."""
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return LOADGEN
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler (cc) found: the load client is built at bench time")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    tmp = LOADGEN.with_suffix(".tmp")
    proc = subprocess.run(
        [cc, "-O2", "-Wall", "-o", str(tmp), str(LOADGEN_SRC)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BenchError(f"building the load client failed:\n{proc.stderr}")
    tmp.replace(LOADGEN)
    return LOADGEN


def loadgen(target: Sequence[str], *args: str, timeout: float = 120.0) -> dict[str, Any]:
    """Run the C client once; ``target`` is ``["--unix", PATH]`` or ``["--exec", CMD, ...]`` (last)."""
    argv = [str(LOADGEN), *args, *target]
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, env=child_env(), cwd=hostd_source())
    if proc.returncode != 0:
        raise BenchError(f"load client failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-800:]}")
    result: dict[str, Any] = orjson.loads(proc.stdout.strip().splitlines()[-1])
    if result.get("errors"):
        raise BenchError(f"load client saw {result['errors']} error answers: {result}")
    return result


def loadgen_serial(target: Sequence[str], count: int, warmup: int, body: str) -> dict[str, Any]:
    """One serial run of the C client: ``count`` calls of ``body`` after ``warmup``."""
    return loadgen(target, "--mode", "serial", "--count", str(count), "--warmup", str(warmup), "--body", body)


# Processes --------------------------------------------------------------------------------


def raise_nofile_limit() -> int:
    """Lift this process's open-file soft limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """A short directory under /tmp (Unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="hb-", dir="/tmp") as d:
        yield Path(d)


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until something accepts connections on ``path`` (or ``proc`` dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{proc.args!r} exited with {proc.returncode} before listening")
        if path.exists():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(path))
            except OSError:
                pass
            else:
                return
            finally:
                s.close()
        time.sleep(0.02)
    raise BenchError(f"nothing listening on {path} after {timeout}s")


def hostd_argv(
    *,
    listen: str | None,
    loop: str,
    log_level: str = "info",
    extra: Sequence[str] = (),
) -> list[str]:
    """``hostd serve`` with the model and auth families off unless ``extra`` turns them on."""
    argv = [PY, "-m", "hostd", "serve", "--loop", loop, "--log-level", log_level]
    if listen is not None:
        argv += ["--listen", listen]
    if not any(a.startswith("--auth-dir") for a in extra):
        argv += ["--auth-dir", ""]
    if not any(a.startswith("--model-base-url") for a in extra):
        argv += ["--model-base-url", ""]
    return argv + list(extra)


def hostd_source() -> str:
    """Where the measured hostd comes from: this tree, or ``$BENCH_HOSTD_PATH`` (an A/B copy)."""
    return os.environ.get("BENCH_HOSTD_PATH") or str(ROOT)


def child_env() -> dict[str, str]:
    """The environment of every child: hostd and bench imported from this tree (or the A/B copy)."""
    env = dict(os.environ)
    env.pop("HOSTD_CONFIG", None)
    env.pop("HOSTD_LOG_LEVEL", None)
    paths = [p for p in (env.get("BENCH_HOSTD_PATH"), str(ROOT), env.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, all threads (from /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running(
    argv: Sequence[str], *, socket_path: Path | None = None, stderr: Any = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process; wait for its socket; SIGTERM (then SIGKILL) it on the way out."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=child_env(),
        cwd=hostd_source(),  # `python -m` puts the working directory first on sys.path
    )
    try:
        if socket_path is not None:
            wait_for_socket(socket_path, proc)
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS from /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def best(runs: list[dict[str, Any]], key: str, *, lowest: bool = False) -> dict[str, Any]:
    """The best of several runs by ``key`` (the machine is shared: noise only ever slows a run)."""
    return min(runs, key=lambda r: r[key]) if lowest else max(runs, key=lambda r: r[key])


# Machine ----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
                break
    versions: dict[str, str] = {}
    for mod in ("httpx", "orjson", "msgspec", "uvloop", "anyio", "mcp"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[mod] = version(mod)
    cc = shutil.which("cc") or ""
    cc_version = ""
    if cc:
        with contextlib.suppress(Exception):
            cc_version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
            cc_version = cc_version.splitlines()[0]
    commit = dirty = ""
    with contextlib.suppress(Exception):
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "hostd"], capture_output=True, text=True).stdout
    return {
        "hostd_commit": commit + (" + uncommitted changes under hostd/" if dirty.strip() else ""),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cc": cc_version,
        "nofile_soft_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "load_avg_at_start": list(os.getloadavg()),
        "hostd_source": hostd_source(),
        "packages": versions,
    }


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class UpstreamProcess:
    """``bench/upstream.py`` (or another server module) in its own process, driven over stdin/stdout."""

    def __init__(self, module: str = "bench.upstream") -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=child_env(),
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            stop_process(self.proc)
            raise BenchError(f"{module} did not start")
        self.port: int = orjson.loads(line)["port"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, text: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError("the upstream server exited")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        stop_process(self.proc)

    def __enter__(self) -> UpstreamProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
