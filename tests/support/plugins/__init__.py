"""Real plugin processes for tests: started against a hostd socket, or under ``hostd run``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.hostd_proc import HOSTD, HostdProcess, launch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SCRIPTED = HERE / "scripted.py"
EXECUTOR = HERE / "counting_executor.py"  # the examples' executor streams a model answer instead


@dataclass
class PluginProcess:
    proc: asyncio.subprocess.Process
    pid: int

    async def wait(self, timeout: float = 10.0) -> int:
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.wait()


async def start_plugin(hp: HostdProcess, *args: str) -> PluginProcess:
    """Start tests/support/plugins/scripted.py on hostd's plugin socket; returns once it said hello."""
    env = {**os.environ, "HOSTD_SOCKET": f"unix:{hp.socket}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPTED), *args, stdout=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        line = await proc.stdout.readline()
    if not line.startswith(b"READY "):
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"plugin did not start: {line!r}")
    return PluginProcess(proc, int(line.split()[1]))


@contextlib.asynccontextmanager
async def plugin_process(hp: HostdProcess, *args: str) -> AsyncIterator[PluginProcess]:
    plugin = await start_plugin(hp, *args)
    try:
        yield plugin
    finally:
        await plugin.kill()


async def start_run(
    tmp: Path, *args: str, cmd: list[str] | None = None, native: Path | None = None, ready: str = '"hello plugin"'
) -> HostdProcess:
    """Start ``hostd run [args] -- CMD`` (or, given ``native``, ``hostd run [args] --native LIB``)
    with a control socket; returns once ``ready`` is logged."""
    assert (cmd is None) != (native is None), "a command or a native library, not both"
    control = str(tmp / "control.sock")
    argv = [*HOSTD, "run", "--log-level", "debug", "--control", f"unix:{control}"]
    argv += ["--auth-dir", "", "--model-base-url", "", *args]
    argv += ["--native", str(native)] if native is not None else ["--", *(cmd or [])]
    return await launch(
        argv,
        socket=None,
        control=control,
        ready=ready,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
    )


def scripted(*args: str) -> list[str]:
    return [sys.executable, str(SCRIPTED), *args]
