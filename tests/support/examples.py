"""What the SDK example tests share: hostd with its control socket, the fake proxy as its model
API, a loopback upstream serving ``/page``, an auth directory with two credentials (and one
file that is not one), and a way to wait for a log line written after a point."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.fake_proxy import FakeProxy
from tests.support.hostd_proc import HostdProcess, start_hostd
from tests.support.upstream import Request, Response, Upstream

T = 20.0


@dataclass
class Stack:
    hp: HostdProcess
    proxy: FakeProxy
    upstream: Upstream
    auth_dir: Path


async def example_stack() -> AsyncIterator[Stack]:
    """The body of a module-scoped ``stack`` fixture."""
    with tempfile.TemporaryDirectory(prefix="hostd-", dir="/tmp") as tmp:
        base = Path(tmp)
        auth_dir = base / "auth"
        auth_dir.mkdir()
        (auth_dir / "claude-a.json").write_text(json.dumps({"type": "claude", "email": "a@example.com"}))
        (auth_dir / "gemini-b.json").write_text(json.dumps({"type": "gemini"}))
        (auth_dir / "notes.json").write_text(json.dumps({"no": "type"}))  # not a credential
        proxy = await FakeProxy().start()
        upstream = await Upstream().start()

        @upstream.route("/page")
        async def page(_: Request) -> Response:
            return Response(200, [("Content-Type", "text/plain")], b"hello from upstream")

        hp = await start_hostd(base, "--model-base-url", proxy.url, "--auth-dir", str(auth_dir), control=True)
        try:
            yield Stack(hp, proxy, upstream, auth_dir)
        finally:
            await hp.stop()
            await upstream.stop()
            await proxy.stop()


async def wait_log_after(hp: HostdProcess, seen: int, *parts: str) -> dict[str, Any]:
    """The first hostd log line after line ``seen`` that contains every one of ``parts``."""
    async with asyncio.timeout(T):
        while True:
            for line in hp.stderr_lines[seen:]:
                if all(p in line for p in parts):
                    parsed: dict[str, Any] = json.loads(line)
                    return parsed
            seen = len(hp.stderr_lines)
            if hp._stderr_task is not None and hp._stderr_task.done():
                raise RuntimeError(f"hostd exited before logging {parts}")
            hp._new_line.clear()
            if len(hp.stderr_lines) == seen:
                await hp._new_line.wait()
