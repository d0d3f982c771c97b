"""A tiny asyncio SDK for hostd plugins written in Python. Standard library only.

A plugin serves the methods the host side invokes through hostd (``hostd.invoke``) and calls
hostd's ``host.*`` methods back on the same connection::

    from hostd_plugin import Plugin

    plugin = Plugin("my-executor")

    @plugin.method("executor.execute_stream")
    async def execute_stream(params: dict) -> dict:
        stream_id = params["stream_id"]

        async def produce() -> None:
            for i in range(3):
                await plugin.emit(stream_id, f"chunk {i}".encode())
            await plugin.close_stream(stream_id)

        plugin.spawn(produce())  # answer first: the host learns the stream id from the answer
        return {}

    plugin.run()

Transport: stdio when spawned by ``hostd run`` (the default when ``$HOSTD_SOCKET`` is unset),
or ``unix:PATH``. On stdio the protocol keeps the original stdout to itself and ``print()``
goes to stderr, which hostd turns into log lines.

What the SDK does for you: ``hostd.hello``; answers by id; one task per incoming request;
``$/cancelRequest`` cancels that task and answers ``-32800``; unknown methods get
``-32601``; an exception becomes a ``-32000`` error (raise :class:`RpcError` to choose
the error object). Tasks started with :meth:`Plugin.spawn` are cancelled when hostd goes away.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

MAX_LINE = 256 * 1024 * 1024  # hostd's answers can be much longer than its request limit
SCHEMA_VERSION = 3

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class RpcError(Exception):
    """A JSON-RPC error: raised by :meth:`Plugin.call`, or by a handler to answer with it."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data

    @classmethod
    def from_error(cls, error: dict[str, Any]) -> RpcError:
        return cls(int(error.get("code", -32000)), str(error.get("message", "")), error.get("data"))

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class Disconnected(Exception):
    """hostd closed the connection."""


class Plugin:
    def __init__(self, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        self.handlers: dict[str, Handler] = {}
        self.hello: dict[str, Any] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[Any]] = {}
        self._serving: dict[Any, asyncio.Task[None]] = {}
        self._cancelled: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None

    # Declaring methods ------------------------------------------------------------------

    def method(self, name: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.handlers[name] = fn
            return fn

        return register

    # Running ----------------------------------------------------------------------------

    def run(self, address: str | None = None) -> None:
        """Connect, say hello and serve until hostd closes the connection."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve(address))

    async def serve(self, address: str | None = None, ready: Callable[[], Any] | None = None) -> None:
        address = address or os.environ.get("HOSTD_SOCKET") or "stdio"
        reader, self._writer = await _open(address)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                reading = tg.create_task(self._read_loop(reader))
                self.hello = await self.call(
                    "hostd.hello", {"plugin_id": self.plugin_id, "schema_version": SCHEMA_VERSION}
                )
                if ready is not None:
                    ready()
                await reading
                for task in [*self._serving.values()]:
                    task.cancel()
                raise _Stop  # cancels background tasks too
        except* _Stop:
            pass
        finally:
            self._tg = None
            self._writer.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        """Run ``coro`` in the background, for as long as the connection lasts."""
        if self._tg is None:
            raise RuntimeError("the plugin is not connected")
        return self._tg.create_task(_logged(coro))

    # Calling hostd ------------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Call a hostd method; returns its result or raises :class:`RpcError`."""
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(rid, None)

    async def emit(self, stream_id: str, payload: bytes = b"", error: str = "") -> None:
        """``host.stream.emit``: waits while 16 chunks are queued and unread."""
        params: dict[str, Any] = {"stream_id": stream_id, "payload": base64.b64encode(payload).decode("ascii")}
        if error:
            params["error"] = error
        await self.call("host.stream.emit", params)

    async def close_stream(self, stream_id: str, error: str = "") -> None:
        """``host.stream.close``: what is queued is still delivered, then ``error`` if given."""
        params = {"stream_id": stream_id, "error": error} if error else {"stream_id": stream_id}
        await self.call("host.stream.close", params)

    async def log(self, message: str, level: str = "info", host_callback_id: str = "", **fields: Any) -> None:
        params: dict[str, Any] = {"level": level, "message": message, "fields": fields}
        if host_callback_id:
            params["host_callback_id"] = host_callback_id
        await self.call("host.log", params)

    # Plumbing -------------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None or self._writer.is_closing():
            raise Disconnected("not connected to hostd")
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        await self._writer.drain()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                if line.strip():
                    self._dispatch(json.loads(line))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(Disconnected("hostd closed the connection"))

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if method is None:  # an answer to one of our calls
            fut = self._pending.get(message.get("id"))
            if fut is not None and not fut.done():
                if "error" in message:
                    fut.set_exception(RpcError.from_error(message["error"]))
                else:
                    fut.set_result(message.get("result"))
            return
        if method == "$/cancelRequest":
            task = self._serving.get((message.get("params") or {}).get("id"))
            if task is not None and not task.done():
                self._cancelled.add(task)
                task.cancel()
            return
        assert self._tg is not None
        rid = message.get("id")
        task = self._tg.create_task(self._serve(method, message.get("params") or {}, rid))
        if rid is not None:
            self._serving[rid] = task

    async def _serve(self, method: str, params: dict[str, Any], rid: Any) -> None:
        task = asyncio.current_task()
        handler = self.handlers.get(method)
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        try:
            if handler is None:
                raise RpcError(-32601, f"method not found: {method}")
            answer["result"] = await handler(params)
        except RpcError as e:
            answer["error"] = e.to_error()
        except asyncio.CancelledError:
            if task is None or task not in self._cancelled:
                raise
            task.uncancel()  # the cancel is consumed: the answer below must still be written
            answer["error"] = {"code": -32800, "message": "request cancelled"}
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            answer["error"] = {"code": -32000, "message": str(e) or type(e).__name__}
        finally:
            self._cancelled.discard(task)
            if self._serving.get(rid) is task:
                del self._serving[rid]
        if rid is not None:
            with contextlib.suppress(Disconnected, ConnectionError):
                await self._send(answer)


class _Stop(Exception):
    pass


async def _logged(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        await coro
    except (Disconnected, ConnectionError):
        pass
    except Exception:
        traceback.print_exc(file=sys.stderr)


async def _open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if address.startswith("unix:"):
        return await asyncio.open_unix_connection(address[5:], limit=MAX_LINE)
    if address != "stdio":
        raise ValueError(f"unsupported address {address!r}: expected stdio or unix:PATH")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0))
    # Keep the real stdout for protocol lines; anything printed goes to stderr (hostd's log).
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(protocol_fd, "wb", buffering=0)
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
