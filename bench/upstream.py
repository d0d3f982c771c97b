"""A cheap loopback HTTP/1.1 server for the relay and scale benchmarks (its own process).

Raw ``asyncio.Protocol``, no framework, so it costs little next to what it measures:

- ``GET /body?size=N``: ``N`` bytes with a ``Content-Length``, written as fast as the
  client reads (flow control through ``pause_writing``/``resume_writing``).
- ``GET /hold``: a chunked response whose headers and first chunk go out at once, then
  nothing until the client disconnects. The server records every drop.

Run as ``python -m bench.upstream``. It prints ``{"port": N}`` when listening, then answers
commands read from stdin, one JSON line each:

- ``stats``: counters (open connections, open and total ``/hold`` responses, last close time).
- ``wait_hold N TIMEOUT``: wait until at least ``N`` ``/hold`` responses are open.
- ``wait_hold_zero TIMEOUT``: wait until no ``/hold`` response is open; answers with the
  ``time.monotonic()`` of the last drop (CLOCK_MONOTONIC, comparable across processes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import time
from typing import Any, cast

import orjson

BLOCK = memoryview(bytes(range(256)) * 1024)  # 256 KiB of body, reused for every write
HOLD_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello\n\r\n"


class State:
    def __init__(self) -> None:
        self.open = 0
        self.hold_open = 0
        self.hold_total = 0
        self.requests = 0
        self.last_close = 0.0
        self.changed = asyncio.Event()

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def stats(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "hold_open": self.hold_open,
            "hold_total": self.hold_total,
            "requests": self.requests,
            "last_close": self.last_close,
        }


class HttpConnection(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False
        self.holding = False
        self.remaining = 0
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.state.open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.open -= 1
        if self.holding:
            self.holding = False
            self.state.hold_open -= 1
            self.state.last_close = time.monotonic()
            self.state.notify()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next_request()

    def eof_received(self) -> bool:
        return False

    def _next_request(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.transport is None:
            return
        head, self.buf = self.buf[:end], self.buf[end + 4 :]
        request_line = head.split(b"\r\n", 1)[0]
        try:
            _method, target, _version = request_line.split(b" ", 2)
        except ValueError:
            self.transport.close()
            return
        self.state.requests += 1
        path, _, query = target.partition(b"?")
        params = dict(p.split(b"=", 1) for p in query.split(b"&") if b"=" in p)
        if path == b"/body":
            self.busy = True
            self.remaining = int(params.get(b"size", b"0"))
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.remaining)
            self._pump()
        elif path == b"/hold":
            self.busy = True
            self.holding = True
            self.state.hold_open += 1
            self.state.hold_total += 1
            self.state.notify()
            self.transport.write(HOLD_HEAD)
        else:
            self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            self._next_request()

    def _pump(self) -> None:
        assert self.transport is not None
        while self.remaining > 0 and not self.paused:
            n = min(self.remaining, len(BLOCK))
            self.transport.write(BLOCK[:n])
            self.remaining -= n
        if self.remaining == 0 and self.busy and not self.holding:
            self.busy = False
            self._next_request()


async def _wait(state: State, predicate: Any, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await state.changed.wait()
    except TimeoutError:
        return False
    return True


async def serve(host: str) -> None:
    loop = asyncio.get_running_loop()
    state = State()
    server = await loop.create_server(lambda: HttpConnection(state), host, 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    out = sys.stdout.buffer
    out.write(orjson.dumps({"port": port}) + b"\n")
    out.flush()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        words = line.decode().split()
        if not words:
            continue
        answer: dict[str, Any]
        if words[0] == "wait_hold":
            want, timeout = int(words[1]), float(words[2])
            ok = await _wait(state, lambda want=want: state.hold_open >= want, timeout)
            answer = {"ok": ok, **state.stats()}
        elif words[0] == "wait_hold_zero":
            ok = await _wait(state, lambda: state.hold_open == 0, float(words[1]))
            answer = {"ok": ok, **state.stats()}
        else:
            answer = {"ok": True, **state.stats()}
        out.write(orjson.dumps(answer) + b"\n")
        out.flush()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runner: Any = asyncio.run
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host))


if __name__ == "__main__":
    main()
