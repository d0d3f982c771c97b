"""A real HTTP/1.1 server on 127.0.0.1 for tests, with hooks to see what hostd does to it.

It records each request, counts open connections, and signals when a client drops a
connection, so tests can check upstream cleanup from the server's side.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from tests.support.loopback import LoopbackServer


@dataclass
class Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class Response:
    """What a route answers: status, headers and a body (bytes, or an async generator of chunks)."""

    def __init__(self, status: int = 200, headers: list[tuple[str, str]] | None = None, body: bytes = b"", chunks=None):
        self.status = status
        self.headers = headers or []
        self.body = body
        self.chunks = chunks


Route = Callable[[Request], Awaitable[Response]]


class Upstream(LoopbackServer):
    """Routes by path; records requests; counts connections open, total and dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.open_connections = 0
        self.total_connections = 0
        self.dropped = 0  # connections the client closed while we were still sending

    def hold(
        self, path: str, before: list[bytes], release: asyncio.Event | None = None, after: list[bytes] | None = None
    ) -> None:
        """Route ``path`` to a streamed answer: ``before`` at once, then, once ``release`` is
        set, ``after`` and the end (never, without ``release``)."""

        async def body() -> AsyncIterator[bytes]:
            for chunk in before:
                yield chunk
            if release is not None:
                await release.wait()
            for chunk in after or []:
                yield chunk

        async def answer(_: Request) -> Response:
            return Response(200, [("X-Stream", "yes")], chunks=body())

        self.routes[path] = answer

    def route(self, path: str) -> Callable[[Route], Route]:
        def wrap(fn: Route) -> Route:
            self.routes[path] = fn
            return fn

        return wrap

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self.total_connections += 1
        self._notify()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = [tuple(x.split(": ", 1)) for x in lines[1:] if x]
                length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
                body = await reader.readexactly(length) if length else b""
                req = Request(method, path, headers, body)  # type: ignore[arg-type]
                self.requests.append(req)
                self._notify()
                route = self.routes.get(path.split("?")[0])
                resp = await route(req) if route else Response(404, body=b"not found")
                if resp.chunks is None:
                    await self._send(writer, resp)
                    continue
                # While streaming, watch the socket: a client that hangs up is seen at once,
                # even when the route is idle between chunks.
                sending = asyncio.ensure_future(self._send(writer, resp))
                watching = asyncio.ensure_future(reader.read(1))
                await asyncio.wait({sending, watching}, return_when=asyncio.FIRST_COMPLETED)
                if not sending.done():
                    sending.cancel()
                    self.dropped += 1
                    await asyncio.gather(sending, return_exceptions=True)
                    break
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
                sending.result()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self.open_connections -= 1
            writer.close()
            self._notify()

    async def _send(self, writer: asyncio.StreamWriter, resp: Response) -> None:
        head = [f"HTTP/1.1 {resp.status} X"]
        head += [f"{k}: {v}" for k, v in resp.headers]
        if resp.chunks is None:
            head.append(f"Content-Length: {len(resp.body)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + resp.body)
            await writer.drain()
            return
        head.append("Transfer-Encoding: chunked")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            async for chunk in resp.chunks:
                if chunk:
                    writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            self.dropped += 1
            raise


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)
