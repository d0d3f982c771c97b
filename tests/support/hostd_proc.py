"""Run a real hostd process for a test: over a Unix socket or over its stdio pipes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from hostd.client import MAX_LINE, Client

HOSTD = [sys.executable, "-m", "hostd"]


def hostd_without(*modules: str) -> list[str]:
    """hostd's command line as if built without a C compiler: ``modules`` cannot be imported."""
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in modules)
    return [sys.executable, "-c", f"import sys; {blocked}; from hostd.cli import main; sys.exit(main())"]


# Every hostd started by the current test: its log is attached to the report of a failure.
STARTED: list[HostdProcess] = []


@dataclass
class HostdProcess:
    proc: asyncio.subprocess.Process
    socket: str | None
    control: str | None
    stderr_lines: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)  # just before the process was spawned
    _stderr_task: asyncio.Task[None] | None = None
    _new_line: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self) -> Client:
        assert self.socket is not None
        return await Client.connect(f"unix:{self.socket}")

    async def connect_control(self) -> Client:
        assert self.control is not None
        return await Client.connect(f"unix:{self.control}")

    def stdio_client(self) -> Client:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        return Client(self.proc.stdout, self.proc.stdin)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._stderr_task
        return code

    async def wait_log(self, text: str, *more: str, timeout: float = 10.0) -> str:
        """The first log line (from the start) that contains ``text`` and every one of ``more``."""
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for line in self.stderr_lines[seen:]:
                    if text in line and all(t in line for t in more):
                        return line
                seen = len(self.stderr_lines)
                if self._stderr_task is not None and self._stderr_task.done():
                    raise RuntimeError(f"hostd exited before logging {text!r}")
                self._new_line.clear()
                await self._new_line.wait()

    async def wait_log_count(self, text: str, count: int, timeout: float = 10.0) -> list[str]:
        """Wait until ``count`` log lines contain ``text``; returns them."""
        async with asyncio.timeout(timeout):
            while True:
                lines = [line for line in self.stderr_lines if text in line]
                if len(lines) >= count:
                    return lines
                if self._stderr_task is not None and self._stderr_task.done():
                    raise RuntimeError(f"hostd exited before logging {text!r} {count} times")
                self._new_line.clear()
                await self._new_line.wait()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr_lines.append(line.decode(errors="replace").rstrip("\n"))
            self._new_line.set()
        self._new_line.set()


async def start_hostd(
    tmp: Path,
    *args: str,
    stdio: bool = False,
    control: bool = False,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
    command: list[str] | None = None,
) -> HostdProcess:
    """Start ``hostd serve`` and wait until it is ready (its ``hostd ready`` log line); ``command``
    in place of ``python -m hostd`` (:func:`hostd_without`)."""
    sock = None if stdio else str(tmp / "hostd.sock")
    ctl = str(tmp / "control.sock") if control else None
    argv = [*(prefix or []), *(command or HOSTD), "serve", "--log-level", "debug"]
    if sock:
        argv += ["--listen", f"unix:{sock}"]
    if ctl:
        argv += ["--control", f"unix:{ctl}"]
    if not any(a.startswith("--auth-dir") for a in args):
        argv += ["--auth-dir", ""]
    if not any(a.startswith("--model-base-url") for a in args):
        argv += ["--model-base-url", ""]
    argv += list(args)
    return await launch(argv, socket=sock, control=ctl, env=env)


async def launch(
    argv: list[str],
    *,
    socket: str | None,
    control: str | None,
    env: dict[str, str] | None = None,
    ready: str = '"hostd ready"',
    stdin: int = asyncio.subprocess.PIPE,
    stdout: int = asyncio.subprocess.PIPE,
) -> HostdProcess:
    """Start a hostd command line and return once it logs ``ready`` (killed if it never does)."""
    started_at = time.monotonic()
    full_env = {**os.environ, **(env or {})}
    for var in ("HOSTD_CONFIG", "HOSTD_SOCKET"):
        full_env.pop(var, None)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=stdin, stdout=stdout, stderr=asyncio.subprocess.PIPE, env=full_env, limit=MAX_LINE
    )
    hp = HostdProcess(proc, socket, control, started_at=started_at)
    STARTED.append(hp)
    hp._stderr_task = asyncio.create_task(hp._read_stderr())
    try:
        await hp.wait_log(ready, timeout=20)
    except (TimeoutError, RuntimeError):
        await hp.stop(signal.SIGKILL)
        raise RuntimeError(f"{' '.join(argv)} did not start:\n" + "\n".join(hp.stderr_lines)) from None
    return hp


@contextlib.asynccontextmanager
async def running_hostd(tmp: Path, *args: str, **kw: object) -> AsyncIterator[HostdProcess]:
    hp = await start_hostd(tmp, *args, **kw)  # type: ignore[arg-type]
    try:
        yield hp
    finally:
        await hp.stop()
