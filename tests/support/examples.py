"""What the SDK example tests share: hostd with its control socket, the fake proxy as its model
API, a loopback upstream serving ``/page``, an auth directory with two credentials (and one
file that is not one), and a way to wait for a log line written after a point."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostd.client import Client
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


@contextlib.asynccontextmanager
async def example_plugin(
    stack: Stack, argv: list[str], plugin_id: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run an example plugin on hostd's plugin socket (``env``: its environment, default ours);
    yields once hostd has its hello."""
    seen = len(stack.hp.stderr_lines)
    full_env = {**(os.environ if env is None else env), "HOSTD_SOCKET": f"unix:{stack.hp.socket}"}
    proc = await asyncio.create_subprocess_exec(*argv, env=full_env)
    try:
        await wait_log_after(stack.hp, seen, '"msg":"hello plugin"', f'"plugin":"{plugin_id}"')
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(T):
            await proc.wait()


async def invoke(
    ctl: Client, plugin_id: str, method: str, params: dict[str, Any], *, stream: bool, **extra: Any
) -> dict[str, Any]:
    request = {"plugin_id": plugin_id, "method": method, "params": params, "stream": stream, **extra}
    answer: dict[str, Any] = await ctl.call("hostd.invoke", request, timeout=T)
    return answer


def joined(reads: list[dict[str, Any]]) -> bytes:
    """The payloads of an emit stream's reads, decoded and joined."""
    return b"".join(base64.b64decode(r["payload"]) for r in reads if r["payload"] is not None)
