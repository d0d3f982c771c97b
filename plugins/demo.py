"""`make demo`: start a loopback HTTP server and hostd, then run example plugins against them.

Everything stays on this machine: the upstream listens on 127.0.0.1 and hostd on a Unix
socket in a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny HTTP/1.1 server: /hello answers at once, /events streams three events."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1]
        if path == b"/hello":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\r\nhello from 127!")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(3):
                event = f"data: event {i}\n\n".encode()
                writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.2)  # a live stream: events arrive over time
            writer.write(b"0\r\n\r\n")
        await writer.drain()
    finally:
        writer.close()


async def main() -> int:
    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    workdir = Path(tempfile.mkdtemp(prefix="hostd-demo-"))
    sock = workdir / "hostd.sock"
    env = {**os.environ, "HOSTD_SOCKET": f"unix:{sock}", "PYTHONPATH": str(HERE.parent), "PYTHON": sys.executable}
    print(f"upstream on {base_url}; starting hostd on unix:{sock}\n")
    hostd = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hostd", "serve", "--listen", f"unix:{sock}",
        "--auth-dir", "", "--model-base-url", "", "--log-level", "info",
        stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert hostd.stderr is not None
    logs: list[str] = []
    ready = asyncio.Event()

    async def collect_logs() -> None:
        assert hostd.stderr is not None
        while line := await hostd.stderr.readline():
            logs.append(line.decode().rstrip())
            if '"hostd ready"' in logs[-1]:
                ready.set()

    collector = asyncio.ensure_future(collect_logs())
    code = 1
    try:
        async with asyncio.timeout(15):
            await ready.wait()
        print("== Python plugin (plugins/examples/fetch_plugin.py)")
        py = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "examples" / "fetch_plugin.py"), base_url, env=env
        )
        code = await py.wait()
        if shutil.which("node"):
            print("\n== Node plugin (plugins/node/fetch.mjs)")
            node = await asyncio.create_subprocess_exec("node", str(HERE / "node" / "fetch.mjs"), base_url, env=env)
            code = code or await node.wait()
        print("\n== Shell plugin over stdio (plugins/shell/hello.sh)")
        sh = await asyncio.create_subprocess_exec("bash", str(HERE / "shell" / "hello.sh"), env=env)
        code = code or await sh.wait()
    finally:
        hostd.send_signal(signal.SIGTERM)
        await hostd.wait()
        await collector
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n== hostd's log (stderr, one JSON object per line)")
    for line in logs:
        print("  " + line)
    print("\ndemo " + ("succeeded" if code == 0 else f"failed (exit {code})"))
    return code


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
