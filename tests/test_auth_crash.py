"""SIGKILL at random moments during ``host.auth.save`` never leaves a torn credential.

A worker process saves one credential in a loop with growing content; the test kills it
with SIGKILL at a random moment, many times, and after every kill checks that the file
parses and is byte for byte one of the versions the worker could have completed last.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from hostd.credentials import CredentialStore
from tests.support.auth_crash_child import NAME, version_text

pytestmark = pytest.mark.anyio

BUDGET_S = 8.0  # wall time for the kill loop; the whole test stays well under 20 s
MAX_KILLS = 400
ROOT = Path(__file__).resolve().parent.parent


class ForkServer:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(10):
            raw = await self.proc.stdout.readline()
        if not raw:
            raise RuntimeError("the fork server exited")
        text = raw.decode().rstrip("\n")
        if text.startswith("error"):
            raise AssertionError(f"a save failed in the worker: {text}")
        return text

    async def start(self, first: int) -> tuple[int, list[int]]:
        """Fork a worker; its pid and the versions it reported saved before the pid line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"%d\n" % first)
        await self.proc.stdin.drain()
        saved: list[int] = []
        while True:
            text = await self.line()
            if text.startswith("saved "):
                saved.append(int(text.split()[1]))
            elif text.startswith("pid "):
                return int(text.split()[1]), saved

    async def reaped(self, pid: int, saved: list[int]) -> int:
        """Wait until the server reaped ``pid``; collects the worker's remaining reports."""
        while True:
            text = await self.line()
            if text.startswith("saved "):
                saved.append(int(text.split()[1]))
            elif text.startswith(f"reaped {pid} "):
                return os.waitstatus_to_exitcode(int(text.split()[2]))


def _leftover_temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name != NAME]


async def test_sigkill_during_saves_never_leaves_a_torn_file(short_tmp: Path) -> None:
    directory = short_tmp / "auth"
    directory.mkdir()
    target = directory / NAME
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.auth_crash_child",
        str(directory),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    server = ForkServer(proc)
    kills = interrupted_saves = 0
    seen_versions: set[int] = set()
    possible: set[int | None] = {None}  # what the file may hold now (None: no file yet)
    deadline = time.monotonic() + BUDGET_S
    try:
        while kills < MAX_KILLS and time.monotonic() < deadline:
            first = (kills + 1) * 1_000_000
            pid, saved = await server.start(first)
            # The random moment of the kill (this is the experiment, not a synchronisation).
            await asyncio.sleep(rng.uniform(0, 0.02))
            os.kill(pid, signal.SIGKILL)
            code = await server.reaped(pid, saved)
            kills += 1
            assert code == -signal.SIGKILL, f"worker ended with {code}, not by the kill (seed {seed})"

            # The last reported save, or the next one if the kill hit between save and report;
            # with no report, the previous content or this worker's first version.
            possible = {saved[-1], saved[-1] + 1} if saved else possible | {first}
            if not target.exists():
                assert None in possible, f"the credential vanished after kill {kills} (seed {seed})"
                continue
            data = target.read_bytes()
            parsed = json.loads(data)  # never torn: always parses
            assert data == version_text(parsed["version"], parsed["step"]), f"kill {kills}: bytes differ (seed {seed})"
            assert parsed["version"] in possible, f"kill {kills}: version {parsed['version']} not in {possible}"
            assert stat.S_IMODE(target.lstat().st_mode) == 0o600
            possible = {parsed["version"]}
            seen_versions.add(parsed["version"])
            # A temp file left behind means the kill landed inside a save (after the
            # temp file was created, before the rename): count and clear it.
            temps = _leftover_temps(directory)
            if temps:
                interrupted_saves += 1
                for temp in temps:
                    assert temp.name.startswith(".hostd-save-") and temp.name.endswith(".tmp")
                    temp.unlink()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        async with asyncio.timeout(10):
            await proc.wait()

    print(
        f"\nauth crash test: {kills} SIGKILLs, {interrupted_saves} landed inside a save, "
        f"{len(seen_versions)} distinct versions survived (seed {seed})"
    )
    assert kills >= 20
    assert interrupted_saves >= 1, "no kill landed inside a save: the test exercised nothing"
    assert len(seen_versions) >= 2
    # The store still lists exactly the one credential (temp files are never credentials).
    assert [c.name for c in CredentialStore(str(directory)).scan()] == [NAME]
