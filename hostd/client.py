"""A small asyncio JSON-RPC client for hostd: used by ``hostd call``, Python plugins and tests.

One reader task per connection matches answers to requests by id and runs handlers for
requests hostd sends (``hostd.invoke`` targets a plugin this way). The reader is owned by
the client: :meth:`Client.aclose` (or leaving ``async with``) cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

MAX_LINE = 256 * 1024 * 1024  # hostd's answers can be far longer than its request limit

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class RpcError(Exception):
    """A JSON-RPC error answer: ``code``, ``message`` and ``data`` as hostd sent them."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        self.code: int = error.get("code", 0)
        self.message: str = error.get("message", "")
        self.data: dict[str, Any] = error.get("data") or {}
        super().__init__(f"{self.code}: {self.message}")


class ConnectionClosed(ConnectionError):
    """hostd closed the connection before answering."""


class Client:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, answer_unknown: bool = False
    ) -> None:
        """``answer_unknown``: answer hostd's requests for methods with no handler with -32601
        (what a plugin wants); otherwise they are queued for :meth:`read_message` (tests)."""
        self.answer_unknown = answer_unknown
        self.reader = reader
        self.writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[Any]] = {}
        self.handlers: dict[str, Handler] = {}
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._serving: dict[Any, asyncio.Task[None]] = {}  # requests from hostd by id
        self._reader_task = asyncio.create_task(self._read_loop(), name="hostd-client-reader")
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, address: str | None = None) -> Client:
        """Connect to ``unix:PATH`` (default ``$HOSTD_SOCKET``)."""
        address = address or os.environ.get("HOSTD_SOCKET", "")
        path = address[5:] if address.startswith("unix:") else address
        if not path:
            raise ValueError("no address: pass unix:PATH or set HOSTD_SOCKET")
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE)
        return cls(reader, writer)

    @classmethod
    async def stdio(cls) -> Client:
        """For a plugin spawned by hostd: talk over this process's stdin/stdout."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_LINE)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0))
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.streams.FlowControlMixin(), os.fdopen(1, "wb", buffering=0)
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return cls(reader, writer)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def call(self, method: str, params: Any = None, timeout: float | None = None) -> Any:
        """Send a request and return its ``result``; raises :class:`RpcError` on an error answer."""
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        try:
            await self.send(message)
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(rid, None)

    def next_id(self) -> int:
        return next(self._ids)

    async def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)

    async def send(self, message: Any) -> None:
        await self.send_raw(orjson.dumps(message) + b"\n")

    async def send_raw(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError as e:
            raise ConnectionClosed(f"hostd closed the connection: {e}") from e

    def expect(self, rid: Any) -> asyncio.Future[Any]:
        """A future for the answer to ``rid`` (for requests sent with :meth:`send`)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        return fut

    async def read_message(self, timeout: float | None = None) -> Any:
        """The next message that is not an answer to a pending call (raw use in tests)."""
        async with asyncio.timeout(timeout):
            return await self.notifications.get()

    async def _read_loop(self) -> None:
        try:
            while line := await self.reader.readline():
                if not line.strip():
                    continue
                message = orjson.loads(line)
                if isinstance(message, dict) and "method" not in message:
                    fut = self._pending.pop(message.get("id"), None)
                    if fut is not None and not fut.done():
                        if "error" in message:
                            fut.set_exception(RpcError(message["error"]))
                        else:
                            fut.set_result(message.get("result"))
                        continue
                method = message.get("method") if isinstance(message, dict) else None
                if method == "$/cancelRequest" and "id" not in message:
                    serving = self._serving.get((message.get("params") or {}).get("id"))
                    if serving is not None:
                        serving.cancel()
                        continue
                if method in self.handlers or (self.answer_unknown and isinstance(method, str) and "id" in message):
                    task = asyncio.create_task(self._serve(message))
                    self._handler_tasks.add(task)
                    task.add_done_callback(self._handler_tasks.discard)
                    continue
                await self.notifications.put(message)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionClosed("hostd closed the connection"))

    async def _serve(self, message: dict[str, Any]) -> None:
        handler = self.handlers.get(message["method"])
        rid = message.get("id")
        task = asyncio.current_task()
        if rid is not None and task is not None:
            self._serving[rid] = task
        try:
            if handler is None:
                raise RpcError({"code": -32601, "message": f"method not found: {message['method']}"})
            result = await handler(message.get("params") or {})
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "result": result}
        except asyncio.CancelledError:
            if task is None or task.uncancel() > 0 or self.closed.is_set():
                raise  # the client is closing, not a $/cancelRequest
            answer = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32800, "message": "request cancelled"}}
        except RpcError as e:
            answer = {"jsonrpc": "2.0", "id": rid, "error": e.error}
        except Exception as e:
            answer = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": str(e)}}
        finally:
            self._serving.pop(rid, None)
        if rid is not None:
            with contextlib.suppress(ConnectionError):
                await self.send(answer)

    async def aclose(self) -> None:
        self.closed.set()  # handlers cancelled from here on are not answered
        for task in list(self._handler_tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()
            await self.writer.wait_closed()
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task
