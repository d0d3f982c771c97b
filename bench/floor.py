"""The floor: a minimal ndjson JSON-RPC server (asyncio.Protocol + orjson) on a Unix socket.

It answers every line with ``{"jsonrpc":"2.0","id":<id>,"result":{}}``, one coalesced
write per read. Nothing a real server must do (validation, dispatch, limits) is done, so
it marks the most a Python asyncio server can answer on this machine.

Run as ``python -m bench.floor --listen PATH [--loop asyncio|uvloop]``; it prints
``ready`` on stdout once listening and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import cast

import orjson


class EchoProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
        lines = data.split(b"\n")
        self.buf = lines.pop()
        out = []
        for line in lines:
            if line:
                out.append(orjson.dumps({"jsonrpc": "2.0", "id": orjson.loads(line).get("id"), "result": {}}))
        if out and self.transport is not None:
            out.append(b"")
            self.transport.write(b"\n".join(out))

    def eof_received(self) -> bool:
        return False


async def serve(path: str) -> None:
    loop = asyncio.get_running_loop()
    if os.path.exists(path):
        os.unlink(path)
    server = await loop.create_unix_server(EchoProtocol, path=path, backlog=1024)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--listen", required=True, help="Unix socket path")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    else:
        runner = asyncio.run
    try:
        runner(serve(args.listen))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
