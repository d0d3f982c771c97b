"""A fake CLIProxyAPI HTTP API on 127.0.0.1 for the ``host.model.*`` tests.

A real HTTP/1.1 server (asyncio streams, keep-alive, chunked streaming answers) serving
the four endpoints hostd's model backend uses. By default it answers like the proxy does
(JSON for plain calls, SSE for streams, ``{"error": {...}}`` bodies for errors, gin's
``404 page not found``); a test can queue an exact answer with :meth:`FakeProxy.plan`.

It records what it received (path, query, headers, body) and, per answer, what it managed
to send, whether the client went away and whether its writes were blocked by a client
that does not read. Pauses are asyncio events the test sets, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.support.loopback import LoopbackServer

GEMINI_PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):(?P<action>generateContent|streamGenerateContent)$")
OPENAI_PATHS = ("/v1/chat/completions", "/v1/responses", "/v1/messages")
WRITE_HIGH_WATER = 64 * 1024


@dataclass
class Received:
    """One request as the proxy saw it."""

    method: str
    path: str
    raw_query: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(self.raw_query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def header_names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}

    def json(self) -> Any:
        return orjson.loads(self.body)


# Answers a test can plan -------------------------------------------------------------------


@dataclass
class Json:
    """A plain answer with a body (JSON by default)."""

    body: bytes
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Type", "application/json")])
    head_gate: asyncio.Event | None = None  # wait for this before sending anything


def error(status: int, message: str, type_: str = "invalid_request_error") -> Json:
    """An error body shaped like the proxy's."""
    return Json(orjson.dumps({"error": {"message": message, "type": type_}}), status)


def text(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> Json:
    return Json(body, status, [("Content-Type", content_type)])


@dataclass
class Sse:
    """A streamed answer: ``events`` written one by one (chunked), with optional pauses.

    ``gates[i]`` is awaited before event ``i`` is sent; ``fail_after`` drops the connection
    after that many events, without ending the chunked body (a stream that fails mid-way).
    """

    events: list[bytes]
    gates: dict[int, asyncio.Event] = field(default_factory=dict)
    fail_after: int | None = None
    status: int = 200
    headers: list[tuple[str, str]] = field(
        default_factory=lambda: [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
    )
    head_gate: asyncio.Event | None = None


@dataclass
class Flood:
    """An endless-looking SSE body of ``total`` bytes, written as fast as the client takes it."""

    total: int
    chunk: int = 16 * 1024
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Type", "text/event-stream")])


Answer = Json | Sse | Flood


@dataclass
class Exchange:
    """One request and what happened to its answer."""

    request: Received
    answer: Answer
    events_sent: int = 0
    bytes_sent: int = 0  # body bytes handed to the transport
    completed: bool = False  # the whole answer was sent
    writes_blocked: bool = False  # waiting right now for the client to take more
    blocked: asyncio.Event = field(default_factory=asyncio.Event)  # writes have blocked at least once
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)  # the client went away first


def sse_event(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def default_events(path: str, model: str) -> list[bytes]:
    """A few events in the style of each API."""
    if path == "/v1/messages":
        return [
            sse_event({"type": "message_start", "message": {"model": model}}, "message_start"),
            sse_event({"type": "content_block_delta", "delta": {"text": "Hel"}}, "content_block_delta"),
            sse_event({"type": "content_block_delta", "delta": {"text": "lo"}}, "content_block_delta"),
            sse_event({"type": "message_stop"}, "message_stop"),
        ]
    if path.startswith("/v1beta/"):
        return [
            sse_event({"candidates": [{"content": {"parts": [{"text": t}]}}], "modelVersion": model}) for t in "Hi!"
        ]
    if path == "/v1/responses":
        return [
            sse_event({"type": "response.created", "response": {"model": model}}, "response.created"),
            sse_event({"type": "response.output_text.delta", "delta": "Hello"}, "response.output_text.delta"),
            sse_event({"type": "response.completed"}, "response.completed"),
        ]
    chunks = [
        sse_event({"object": "chat.completion.chunk", "model": model, "choices": [{"delta": {"content": t}}]})
        for t in ("Hel", "lo", "!")
    ]
    return [*chunks, b"data: [DONE]\n\n"]


class FakeProxy(LoopbackServer):
    def __init__(self, api_key: str = "") -> None:
        super().__init__()
        self.api_key = api_key
        self.received: list[Received] = []
        self.exchanges: list[Exchange] = []
        self._planned: list[Answer] = []

    def reset(self) -> None:
        """Forget what was received and planned (for a proxy shared by several tests)."""
        self.received.clear()
        self.exchanges.clear()
        self._planned.clear()

    def plan(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order (then back to the defaults)."""
        self._planned.extend(answers)

    async def next_exchange(self, count: int = 1, timeout: float = 10.0) -> Exchange:
        """The ``count``-th exchange, once its request has arrived."""
        await self.wait_for(lambda: len(self.exchanges) >= count, timeout)
        return self.exchanges[count - 1]

    # Serving --------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                self.received.append(request)
                exchange = Exchange(request, self._choose(request))
                self.exchanges.append(exchange)
                self._notify()
                if not await self._answer(exchange, reader, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            self._notify()

    async def _read_request(self, reader: asyncio.StreamReader) -> Received | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name, value.strip()))
        path, _, raw_query = target.partition("?")
        lengths = [int(v) for k, v in headers if k.lower() == "content-length"]
        chunked = any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in headers)
        if chunked:
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += data[:-2]
        else:
            body = await reader.readexactly(lengths[0]) if lengths else b""
        return Received(method, path, raw_query, headers, body)

    def _choose(self, request: Received) -> Answer:
        if self._planned:
            return self._planned.pop(0)
        gemini = GEMINI_PATH.match(request.path)
        if request.method != "POST" or (request.path not in OPENAI_PATHS and gemini is None):
            return text(404, b"404 page not found")
        if self.api_key and self.api_key not in self._presented_keys(request):
            return error(401, "Invalid API key", "authentication_error")
        try:
            payload = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return error(400, "Invalid request body: not JSON")
        if not isinstance(payload, dict):
            return error(400, "Invalid request body: not an object")
        model = gemini.group("model") if gemini else str(payload.get("model", ""))
        streaming = gemini.group("action") == "streamGenerateContent" if gemini else payload.get("stream") is True
        if streaming:
            return Sse(default_events(request.path, model))
        answer = {"object": "fake.completion", "path": request.path, "model": model, "content": "Hello!"}
        return Json(orjson.dumps(answer), headers=[("Content-Type", "application/json"), ("X-Fake-Proxy", "1")])

    @staticmethod
    def _presented_keys(request: Received) -> set[str]:
        keys = {v for name in ("x-api-key", "x-goog-api-key") for v in request.header_values(name)}
        for value in request.header_values("authorization"):
            if value.startswith("Bearer "):
                keys.add(value[len("Bearer ") :])
        return keys

    async def _answer(self, exchange: Exchange, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Send the answer; False when the connection must end (dropped by either side)."""
        answer = exchange.answer
        # While answering, the client sends nothing (no pipelining): a read that returns
        # means it went away.
        watcher = asyncio.create_task(self._watch_disconnect(exchange, reader))
        try:
            head_gate = answer.head_gate if isinstance(answer, Json | Sse) else None
            if head_gate is not None and not await self._until(head_gate, exchange):
                return False
            if isinstance(answer, Json):
                length = [] if answer.status in (204, 304) else [("Content-Length", str(len(answer.body)))]
                head = _head(answer.status, [*answer.headers, *length])
                writer.write(head + answer.body)
                await writer.drain()
                exchange.bytes_sent = len(answer.body)
                exchange.completed = True
                return True
            status = answer.status if isinstance(answer, Sse) else 200
            writer.write(_head(status, [*answer.headers, ("Transfer-Encoding", "chunked")]))
            await writer.drain()
            if isinstance(answer, Sse):
                ok = await self._send_events(answer, exchange, writer)
            else:
                ok = await self._flood(answer, exchange, writer)
            if not ok:
                return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            exchange.completed = True
            return True
        except ConnectionError:
            exchange.disconnected.set()
            return False
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self._notify()

    async def _send_events(self, answer: Sse, exchange: Exchange, writer: asyncio.StreamWriter) -> bool:
        for i, event in enumerate(answer.events):
            if answer.fail_after is not None and i >= answer.fail_after:
                writer.transport.abort()  # no final chunk: the body is cut short
                return False
            gate = answer.gates.get(i)
            if gate is not None and not await self._until(gate, exchange):
                return False
            await self._write_chunk(event, exchange, writer)
            exchange.events_sent += 1
            self._notify()
        if answer.fail_after is not None and answer.fail_after <= len(answer.events):
            writer.transport.abort()
            return False
        return True

    async def _flood(self, answer: Flood, exchange: Exchange, writer: asyncio.StreamWriter) -> bool:
        line = b"data: " + b"x" * (answer.chunk - 8) + b"\n\n"
        while exchange.bytes_sent < answer.total:
            await self._write_chunk(line[: answer.total - exchange.bytes_sent], exchange, writer)
        return True

    async def _write_chunk(self, data: bytes, exchange: Exchange, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        exchange.bytes_sent += len(data)
        if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            # drain() will wait: the client is not taking what we send.
            exchange.writes_blocked = True
            exchange.blocked.set()
            self._notify()
        try:
            await writer.drain()
        finally:
            exchange.writes_blocked = False
            self._notify()

    async def _until(self, gate: asyncio.Event, exchange: Exchange) -> bool:
        """Wait for ``gate``; False if the client went away first."""
        if gate.is_set():
            return True
        waiter = asyncio.ensure_future(gate.wait())
        gone = asyncio.ensure_future(exchange.disconnected.wait())
        try:
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            gone.cancel()
        return gate.is_set() and not exchange.disconnected.is_set()

    async def _watch_disconnect(self, exchange: Exchange, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read(1)
        exchange.disconnected.set()
        self._notify()


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
