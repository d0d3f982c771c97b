"""hostd_plugin: write hostd plugins in Python. asyncio, standard library only, one file.

A plugin is one JSON-RPC 2.0 session with hostd (newline-delimited JSON on stdio or a Unix
socket). On it the plugin calls hostd's ``host.*`` methods (outbound HTTP, model execution
through the proxy, credentials, logging, emit streams) and serves the methods the host side
invokes through ``hostd.invoke`` (``management.handle``, ``executor.execute_stream``, …)::

    from hostd_plugin import Emitter, Plugin

    plugin = Plugin("my-executor")

    @plugin.method("management.handle")
    async def handle(params: dict) -> dict:
        page = await plugin.http_do(params["url"], host_callback_id=params["host_callback_id"])
        return {"status": page.status_code}

    @plugin.stream_method("executor.execute_stream")
    async def execute_stream(params: dict, out: Emitter) -> None:
        for word in ("hello", "world"):
            await out.emit(word.encode())   # the SDK answers {} first and closes the stream after

    plugin.run()

What the SDK does for you (docs/plugins.md has the whole reference):

- connects over stdio (under ``hostd run``) or to ``$HOSTD_SOCKET`` (``unix:PATH``), then says
  ``hostd.hello`` with the plugin id: hostd sends that id to the proxy as ``X-CPA-Skip-Plugin``
  on every model call, so the proxy does not route the plugin's own request back into it, and
  ``hostd.invoke`` finds the plugin by it;
- answers by id, one task per request; ``$/cancelRequest`` cancels that task, answered
  ``-32800``; unknown methods ``-32601``; an exception ``-32000`` with its text (raise
  :class:`RpcError` to choose the error);
- typed helpers for every ``host.*`` method: bytes in and out (base64 is the SDK's business),
  headers as ``dict[str, list[str]]``;
- streams as async iterators of ``bytes`` that always close their stream: at the end, on
  ``break``, on an error and on cancellation;
- producers (:meth:`Plugin.produce`, :meth:`Plugin.stream_method`) whose failure closes their
  emit stream with the exception's text, so the host side's read never waits forever.

On stdio the protocol keeps the original stdout to itself and ``print()`` goes to stderr,
which ``hostd run`` turns into log lines.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import itertools
import json
import os
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "MAX_LINE",
    "SCHEMA_VERSION",
    "AuthFile",
    "Disconnected",
    "Emitter",
    "Headers",
    "HttpResponse",
    "HttpStream",
    "ModelResponse",
    "ModelStream",
    "Piece",
    "Plugin",
    "RpcError",
    "SavedAuth",
    "StreamError",
]

SCHEMA_VERSION = 3
"""The ``schema_version`` this SDK sends in ``hostd.hello`` (hostd answers with its own)."""

MAX_LINE = 256 * 1024 * 1024
"""The longest line the SDK reads: hostd's answers can be far longer than its request limit."""

Headers = dict[str, list[str]]
Handler = Callable[[dict[str, Any]], Awaitable[Any]]
StreamHandler = Callable[[dict[str, Any], "Emitter"], Awaitable[None]]
Bytes = bytes | bytearray | memoryview | str


# Errors -------------------------------------------------------------------------------------


class RpcError(Exception):
    """A JSON-RPC error: what a failed call raises, or what a handler raises to choose its answer."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data

    @classmethod
    def from_error(cls, error: Any) -> RpcError:
        if not isinstance(error, dict):
            return cls(-32000, str(error))
        return cls(int(error.get("code", -32000)), str(error.get("message", "")), error.get("data"))

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    @property
    def http_status(self) -> int | None:
        """``data.http_status`` when hostd knows it (model calls, 400..599)."""
        status = self.data.get("http_status") if isinstance(self.data, dict) else None
        return status if isinstance(status, int) else None

    @property
    def retryable(self) -> bool:
        return bool(self.data.get("retryable")) if isinstance(self.data, dict) else False


class Disconnected(ConnectionError):
    """The session with hostd is over (hostd closed the connection, or the plugin stopped)."""


class StreamError(Exception):
    """A stream ended with an error; ``str(e)`` is the error text hostd reported."""

    def __init__(self, message: str, stream_id: str = "") -> None:
        super().__init__(message)
        self.stream_id = stream_id


# Results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpResponse:
    """``host.http.do``'s result (the native ``StatusCode``/``Headers``/``Body``), body decoded."""

    status_code: int
    headers: Headers
    body: bytes

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, errors="replace")


@dataclass(frozen=True)
class ModelResponse:
    """``host.model.execute``'s result, body decoded (``b""`` when the proxy's body was empty)."""

    status_code: int
    headers: Headers
    body: bytes

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Piece:
    """One stream read: ``payload`` (``b""`` when none), ``error`` (``""`` when none), ``done``."""

    payload: bytes
    error: str
    done: bool


@dataclass(frozen=True)
class AuthFile:
    """``host.auth.get``'s result: the credential file's JSON object, parsed."""

    auth_index: str
    name: str
    path: str
    json: dict[str, Any]


@dataclass(frozen=True)
class SavedAuth:
    name: str
    path: str


# Streams ------------------------------------------------------------------------------------


class _Stream:
    """A stream the plugin opened (HTTP or model): read pieces, then it is closed for you.

    Iterate it (``async for piece in stream``) or use it as ``async with``; either way the
    stream is closed when the loop ends, on ``break``, on an exception and on cancellation.
    """

    _read_method = ""
    _close_method = ""

    def __init__(self, plugin: Plugin, stream_id: str, status_code: int, headers: Headers) -> None:
        self.plugin = plugin
        self.stream_id = stream_id
        self.status_code = status_code
        self.headers = headers
        self.closed = False  # closed by us, or finished on hostd's side

    async def _read_piece(self) -> Piece:
        raise NotImplementedError

    async def read(self) -> bytes | None:
        """The next piece (1 byte to 32 KiB), ``None`` at the end; raises :class:`StreamError`."""
        while not self.closed:
            piece = await self._read_piece()
            if piece.done:
                self.closed = True
                if piece.error:
                    raise StreamError(piece.error, self.stream_id)
            if piece.payload:
                return piece.payload
        return None

    async def aclose(self) -> None:
        """Close the stream (idempotent); the upstream request is cancelled at once."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Disconnected):
            await self.plugin.call(self._close_method, {"stream_id": self.stream_id})

    def _close_now(self) -> None:
        """Close without waiting (while being cancelled): the close goes out as a notification."""
        if not self.closed:
            self.closed = True
            self.plugin._notify_nowait(self._close_method, {"stream_id": self.stream_id})

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while (piece := await self.read()) is not None:
                yield piece
        except asyncio.CancelledError:
            self._close_now()
            raise
        finally:
            await self.aclose()

    async def __aenter__(self) -> _Stream:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if isinstance(exc, asyncio.CancelledError):
            self._close_now()
        else:
            await self.aclose()


class HttpStream(_Stream):
    """``host.http.do_stream``: the response's status and headers, then the body piece by piece."""

    _read_method = "host.http.stream_read"
    _close_method = "host.http.stream_close"

    async def _read_piece(self) -> Piece:
        return await self.plugin.http_stream_read(self.stream_id)

    async def __aenter__(self) -> HttpStream:
        return self


class ModelStream(_Stream):
    """``host.model.execute_stream``: the proxy's status and headers, then its body (SSE) in pieces."""

    _read_method = "host.model.stream_read"
    _close_method = "host.model.stream_close"

    async def _read_piece(self) -> Piece:
        return await self.plugin.model_stream_read(self.stream_id)

    async def __aenter__(self) -> ModelStream:
        return self


S = TypeVar("S", bound=_Stream)


class _Opening(Generic[S]):
    """What a ``*_stream`` helper returns: ``await`` it for the stream, or ``async with`` it."""

    def __init__(self, opening: Coroutine[Any, Any, S]) -> None:
        self._opening = opening
        self._stream: S | None = None

    def __await__(self) -> Any:
        return self._opening.__await__()

    async def __aenter__(self) -> S:
        self._stream = await self._opening
        return self._stream

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._stream is not None:
            await self._stream.__aexit__(exc_type, exc, tb)


class Emitter:
    """The plugin's end of an emit stream (``host.stream.*``): the host side reads what it emits."""

    def __init__(self, plugin: Plugin, stream_id: str) -> None:
        self.plugin = plugin
        self.stream_id = stream_id
        self.closed = False

    async def emit(self, payload: Bytes = b"", error: str = "") -> None:
        """``host.stream.emit``: returns once queued; waits while 16 chunks are unread.

        A chunk with an ``error`` is the last one the host side sees."""
        await self.plugin.stream_emit(self.stream_id, payload, error)
        if error:
            self.closed = True

    async def close(self, error: str = "") -> None:
        """``host.stream.close`` (idempotent): what is queued is delivered, then ``error`` if any."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Disconnected):
            await self.plugin.stream_close(self.stream_id, error)

    def _close_now(self, error: str) -> None:
        if not self.closed:
            self.closed = True
            params = {"stream_id": self.stream_id, "error": error} if error else {"stream_id": self.stream_id}
            self.plugin._notify_nowait("host.stream.close", params)


# The plugin ---------------------------------------------------------------------------------


class Plugin:
    """One plugin session: declare methods, then :meth:`run` (or ``await`` :meth:`serve`)."""

    def __init__(self, plugin_id: str, *, schema_version: int = SCHEMA_VERSION) -> None:
        self.plugin_id = plugin_id
        self.schema_version = schema_version
        self.handlers: dict[str, Handler] = {}
        self.hello: dict[str, Any] = {}
        """``hostd.hello``'s answer: ``session``, ``methods``, ``limits``, hostd's ``schema_version``."""
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[Any]] = {}
        self._serving: dict[Any, asyncio.Task[None]] = {}
        self._cancelled: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._stopping: asyncio.Event | None = None
        self._reading_done = False

    # Declaring methods ------------------------------------------------------------------

    def method(self, name: str) -> Callable[[Handler], Handler]:
        """Serve ``name``: ``async def handler(params: dict) -> result`` (``None`` answers ``{}``)."""

        def register(fn: Handler) -> Handler:
            self.handlers[name] = fn
            return fn

        return register

    def stream_method(self, name: str) -> Callable[[StreamHandler], StreamHandler]:
        """Serve a streaming method: ``async def handler(params: dict, out: Emitter) -> None``.

        The SDK answers ``{}`` at once (the host side learns the stream id from that answer),
        runs the handler as the stream's producer, and closes the stream when it returns, or
        with the exception's text when it raises."""

        def register(fn: StreamHandler) -> StreamHandler:
            async def start(params: dict[str, Any]) -> dict[str, Any]:
                stream_id = params.get("stream_id")
                if not isinstance(stream_id, str) or not stream_id:
                    raise RpcError(-32602, f"{name} needs a stream_id: invoke it with stream: true")
                self.produce(stream_id, lambda out: fn(params, out))
                return {}

            self.handlers[name] = start
            return fn

        return register

    # Running ----------------------------------------------------------------------------

    def run(self, address: str | None = None, *, main: Callable[[Plugin], Awaitable[Any]] | None = None) -> None:
        """The whole program: connect, say hello, serve until hostd closes the connection,
        :meth:`stop` is called, ``main`` returns, or SIGTERM/SIGINT. Exits 1 if it cannot connect."""

        async def serve() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop)
            await self.serve(address, main=main)

        try:
            asyncio.run(serve())
        except (OSError, RpcError, ValueError) as e:
            print(f"{self.plugin_id}: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    async def serve(
        self,
        address: str | None = None,
        *,
        ready: Callable[[], Any] | None = None,
        main: Callable[[Plugin], Awaitable[Any]] | None = None,
    ) -> None:
        """Connect to ``address`` (``stdio`` or ``unix:PATH``; default ``$HOSTD_SOCKET``, else stdio),
        say hello and serve. ``ready()`` is called once the hello is answered (it may return an
        awaitable, run in the background); ``main(plugin)`` runs then too, and when it returns
        the plugin stops (its exception, if any, is raised here)."""
        address = address or os.environ.get("HOSTD_SOCKET") or "stdio"
        reader, self._writer = await _open(address)
        self._stopping = asyncio.Event()
        self._reading_done = False
        failure: list[BaseException] = []
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                reading = tg.create_task(self._read_loop(reader))
                stopping = tg.create_task(self._stopping.wait())
                try:
                    self.hello = await self.call(
                        "hostd.hello", {"plugin_id": self.plugin_id, "schema_version": self.schema_version}
                    )
                except (RpcError, Disconnected) as e:
                    failure.append(e)
                    self.stop()
                else:
                    if ready is not None and inspect.isawaitable(started := ready()):
                        self.spawn(started)
                    if main is not None:
                        tg.create_task(self._main(main, failure))
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                raise _Stop  # cancels handlers, producers and spawned tasks
        except* _Stop:
            pass
        finally:
            self._tg = None
            self._reading_done = True
            self._writer.close()
            self._fail_pending()
        if failure:
            raise failure[0]

    def stop(self) -> None:
        """End the session: in-flight handlers and background tasks are cancelled, :meth:`serve`
        returns. Safe to call from a handler, a signal handler or before connecting."""
        if self._stopping is not None:
            self._stopping.set()

    @property
    def connected(self) -> bool:
        return self._tg is not None and not self._reading_done

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[None]:
        """Run ``coro`` in the background for as long as the session lasts (cancelled when it
        ends). An exception is printed to stderr. For a producer, use :meth:`produce`."""
        if self._tg is None:
            raise RuntimeError("the plugin is not connected")
        return self._tg.create_task(_logged(coro))

    def emitter(self, stream_id: str) -> Emitter:
        return Emitter(self, stream_id)

    def produce(self, stream_id: str, producer: Callable[[Emitter], Awaitable[Any]]) -> asyncio.Task[None]:
        """Run ``producer(emitter)`` in the background; when it returns the stream is closed,
        when it raises the stream is closed with the exception's text (the host side reads it
        as the stream's error), when it is cancelled the stream is closed with ``cancelled``."""
        if self._tg is None:
            raise RuntimeError("the plugin is not connected")
        return self._tg.create_task(self._produce(Emitter(self, stream_id), producer))

    async def _produce(self, out: Emitter, producer: Callable[[Emitter], Awaitable[Any]]) -> None:
        try:
            await producer(out)
        except asyncio.CancelledError:
            out._close_now("cancelled")
            raise
        except Exception as e:
            if not isinstance(e, RpcError | Disconnected):
                traceback.print_exc(file=sys.stderr)
            with contextlib.suppress(Disconnected, RpcError):
                await out.close(error=_error_text(e))
        else:
            with contextlib.suppress(Disconnected, RpcError):
                await out.close()

    async def _main(self, main: Callable[[Plugin], Awaitable[Any]], failure: list[BaseException]) -> None:
        try:
            await main(self)
        except Exception as e:
            failure.append(e)
        finally:
            self.stop()

    # Calling hostd ----------------------------------------------------------------------

    async def call(self, method: str, params: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Call any hostd method; returns its ``result`` or raises :class:`RpcError`
        (:class:`Disconnected` when the session is over, ``TimeoutError`` after ``timeout``)."""
        if self._reading_done:
            raise Disconnected("not connected to hostd")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": dict(params or {})})
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(rid, None)

    async def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        """Send a notification (no answer, errors included)."""
        await self._send({"jsonrpc": "2.0", "method": method, "params": dict(params or {})})

    # host.log ---------------------------------------------------------------------------

    async def log(
        self,
        message: str,
        *,
        level: str = "info",
        fields: Mapping[str, Any] | None = None,
        host_callback_id: str = "",
    ) -> None:
        """``host.log``: one structured line in hostd's log, tagged with this plugin's id
        (values under secret-looking keys are redacted by hostd)."""
        params: dict[str, Any] = {"level": level, "message": message, "fields": dict(fields or {})}
        _scope(params, host_callback_id)
        await self.call("host.log", params)

    # host.http.* ------------------------------------------------------------------------

    async def http_do(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, list[str]] | None = None,
        body: Bytes = b"",
        host_callback_id: str = "",
        operation_id: str = "",
        wire_profile: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        """``host.http.do``: the whole response; non-2xx statuses are results, not errors."""
        params = _http_params(url, method, headers, body, host_callback_id, operation_id, wire_profile)
        result = await self.call("host.http.do", params, timeout)
        return HttpResponse(
            int(result.get("StatusCode", 0)), _headers(result.get("Headers")), _unb64(result.get("Body"))
        )

    def http_do_stream(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, list[str]] | None = None,
        body: Bytes = b"",
        host_callback_id: str = "",
        operation_id: str = "",
        wire_profile: Mapping[str, Any] | None = None,
    ) -> _Opening[HttpStream]:
        """``host.http.do_stream``: ``async with plugin.http_do_stream(url) as s: async for piece in s``."""
        params = _http_params(url, method, headers, body, host_callback_id, operation_id, wire_profile)

        async def opening() -> HttpStream:
            result = await self.call("host.http.do_stream", params)
            return HttpStream(
                self, str(result["stream_id"]), int(result.get("status_code", 0)), _headers(result.get("headers"))
            )

        return _Opening(opening())

    async def http_stream_read(self, stream_id: str) -> Piece:
        """``host.http.stream_read`` (low level; iterate an :class:`HttpStream` instead)."""
        result = await self.call("host.http.stream_read", {"stream_id": stream_id})
        return Piece(_unb64(result.get("payload")), str(result.get("error") or ""), bool(result.get("done")))

    async def http_stream_close(self, stream_id: str) -> None:
        await self.call("host.http.stream_close", {"stream_id": stream_id})

    async def http_operation_open(self, host_callback_id: str = "") -> str:
        """``host.http.operation_open``: an id to pass as ``operation_id`` and cancel with :meth:`http_cancel`."""
        params: dict[str, Any] = {}
        _scope(params, host_callback_id)
        result = await self.call("host.http.operation_open", params)
        return str(result["operation_id"])

    async def http_cancel(self, operation_id: str, host_callback_id: str = "") -> None:
        """``host.http.cancel``: aborts the call (or stream) that claimed ``operation_id``."""
        params: dict[str, Any] = {"operation_id": operation_id}
        _scope(params, host_callback_id)
        await self.call("host.http.cancel", params)

    # host.model.* -----------------------------------------------------------------------

    async def model_execute(
        self,
        entry_protocol: str,
        model: str,
        body: Bytes,
        *,
        exit_protocol: str = "",
        headers: Mapping[str, list[str]] | None = None,
        query: Mapping[str, list[str]] | None = None,
        alt: str = "",
        host_callback_id: str = "",
        forced_provider: str = "",
        auth_id: str = "",
        proxy_url: str = "",
        path: str = "",
        timeout: float | None = None,
    ) -> ModelResponse:
        """``host.model.execute``: one request through the proxy's model pipeline. A 4xx/5xx
        from the proxy raises :class:`RpcError` with ``http_status``."""
        params = _model_params(
            entry_protocol, model, body, False, exit_protocol, headers, query, alt,
            host_callback_id, forced_provider, auth_id, proxy_url, path,
        )  # fmt: skip
        result = await self.call("host.model.execute", params, timeout)
        return ModelResponse(
            int(result.get("status_code", 0)), _headers(result.get("headers")), _unb64(result.get("body"))
        )

    def model_execute_stream(
        self,
        entry_protocol: str,
        model: str,
        body: Bytes,
        *,
        exit_protocol: str = "",
        headers: Mapping[str, list[str]] | None = None,
        query: Mapping[str, list[str]] | None = None,
        alt: str = "",
        host_callback_id: str = "",
        forced_provider: str = "",
        auth_id: str = "",
        proxy_url: str = "",
        path: str = "",
    ) -> _Opening[ModelStream]:
        """``host.model.execute_stream`` (``stream: true``): ``async with … as s: async for piece in s``."""
        params = _model_params(
            entry_protocol, model, body, True, exit_protocol, headers, query, alt,
            host_callback_id, forced_provider, auth_id, proxy_url, path,
        )  # fmt: skip

        async def opening() -> ModelStream:
            result = await self.call("host.model.execute_stream", params)
            return ModelStream(
                self, str(result["stream_id"]), int(result.get("status_code", 0)), _headers(result.get("headers"))
            )

        return _Opening(opening())

    async def model_stream_read(self, stream_id: str) -> Piece:
        """``host.model.stream_read`` (low level; iterate a :class:`ModelStream` instead)."""
        result = await self.call("host.model.stream_read", {"stream_id": stream_id})
        return Piece(_unb64(result.get("payload")), str(result.get("error") or ""), bool(result.get("done")))

    async def model_stream_close(self, stream_id: str) -> None:
        await self.call("host.model.stream_close", {"stream_id": stream_id})

    # host.auth.* ------------------------------------------------------------------------

    async def auth_list(self) -> list[dict[str, Any]]:
        """``host.auth.list``: one entry per credential file (``id``, ``auth_index``, ``type``, …)."""
        result = await self.call("host.auth.list", {})
        return list(result.get("files") or [])

    async def auth_get(self, auth_index: str) -> AuthFile:
        """``host.auth.get``: the credential file's JSON. Treat it as a secret: never log it."""
        result = await self.call("host.auth.get", {"auth_index": auth_index})
        return AuthFile(str(result["auth_index"]), str(result["name"]), str(result["path"]), dict(result["json"]))

    async def auth_get_runtime(self, auth_index: str) -> dict[str, Any]:
        """``host.auth.get_runtime``: the same entry :meth:`auth_list` gives, for one file."""
        result = await self.call("host.auth.get_runtime", {"auth_index": auth_index})
        return dict(result["auth"])

    async def auth_save(self, name: str, credential: Mapping[str, Any] | Bytes) -> SavedAuth:
        """``host.auth.save``: write ``name`` (``*.json``) atomically, mode 0600. ``credential``
        is an object, or JSON text (``str``/``bytes``) that is written exactly as given."""
        value: Any
        if isinstance(credential, Mapping):
            value = dict(credential)
        else:
            text = bytes(credential).decode() if not isinstance(credential, str) else credential
            json.loads(text)  # refuse what is not JSON here, not after a round trip
            value = _RawJSON(text)
        result = await self.call("host.auth.save", {"name": name, "json": value})
        return SavedAuth(str(result["name"]), str(result["path"]))

    # host.stream.* ----------------------------------------------------------------------

    async def stream_emit(self, stream_id: str, payload: Bytes = b"", error: str = "") -> None:
        """``host.stream.emit``: queue one chunk on an emit stream (waits while 16 are unread)."""
        params: dict[str, Any] = {"stream_id": stream_id, "payload": _b64(payload)}
        if error:
            params["error"] = error
        await self.call("host.stream.emit", params)

    async def stream_close(self, stream_id: str, error: str = "") -> None:
        """``host.stream.close``: queued chunks are still delivered, then ``error`` if given."""
        params = {"stream_id": stream_id, "error": error} if error else {"stream_id": stream_id}
        await self.call("host.stream.close", params)

    emit = stream_emit
    close_stream = stream_close

    # host.affinity.*, host.routing.* ----------------------------------------------------

    async def affinity_lookup(self, provider: str, model: str, session_id: str) -> dict[str, Any]:
        """``host.affinity.lookup``: standalone hostd answers ``{"status": "unsupported", …}``."""
        result = await self.call(
            "host.affinity.lookup", {"provider": provider, "model": model, "session_id": session_id}
        )
        return dict(result)

    async def routing_reset_cooldown(self, auth_index: str) -> dict[str, Any]:
        """``host.routing.reset_cooldown``: -32601 unless a proxy bridge relays it."""
        return dict(await self.call("host.routing.reset_cooldown", {"auth_index": auth_index}))

    # Plumbing ---------------------------------------------------------------------------

    def _encode(self, message: dict[str, Any]) -> bytes:
        raws: list[str] = []

        def default(value: Any) -> Any:
            if isinstance(value, _RawJSON):
                raws.append(value.text)
                return f"\x00raw{len(raws) - 1}\x00"
            raise TypeError(f"{type(value).__name__} is not JSON serializable")

        line = json.dumps(message, separators=(",", ":"), default=default)
        for i, text in enumerate(raws):
            # Raw JSON text keeps its bytes; a newline (only possible between tokens) would end the line.
            line = line.replace(json.dumps(f"\x00raw{i}\x00"), text.replace("\r", " ").replace("\n", " "), 1)
        return line.encode() + b"\n"

    async def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None or self._writer.is_closing() or self._reading_done:
            raise Disconnected("not connected to hostd")
        try:
            self._writer.write(self._encode(message))
            await self._writer.drain()
        except ConnectionError as e:
            raise Disconnected(f"hostd closed the connection: {e}") from e

    def _notify_nowait(self, method: str, params: dict[str, Any]) -> None:
        """Write a notification without waiting (cleanup while being cancelled)."""
        if self._writer is not None and not self._writer.is_closing() and not self._reading_done:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._writer.write(self._encode({"jsonrpc": "2.0", "method": method, "params": params}))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    print(f"{self.plugin_id}: hostd sent a line that is not JSON", file=sys.stderr)
                    continue
                self._dispatch(message)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._reading_done = True
            self._fail_pending()

    def _fail_pending(self) -> None:
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
            params = message.get("params")
            task = self._serving.get(params.get("id") if isinstance(params, dict) else None)
            if task is not None and not task.done():
                self._cancelled.add(task)
                task.cancel()
            return
        if self._tg is None:
            return
        rid = message.get("id")
        params = message.get("params")
        task = self._tg.create_task(self._serve(str(method), params if isinstance(params, dict) else {}, rid))
        if rid is not None:
            self._serving[rid] = task

    async def _serve(self, method: str, params: dict[str, Any], rid: Any) -> None:
        task = asyncio.current_task()
        handler = self.handlers.get(method)
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        try:
            if handler is None:
                raise RpcError(-32601, f"method not found: {method}")
            result = await handler(params)
            answer["result"] = {} if result is None else result
        except RpcError as e:
            answer["error"] = e.to_error()
        except asyncio.CancelledError:
            if task is None or task not in self._cancelled:
                raise  # the session is ending, not a $/cancelRequest
            task.uncancel()  # the cancel is consumed: the answer below must still be written
            answer["error"] = {"code": -32800, "message": "request cancelled"}
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            answer["error"] = {"code": -32000, "message": _error_text(e)}
        finally:
            self._cancelled.discard(task)  # type: ignore[arg-type,unused-ignore]
            if self._serving.get(rid) is task:
                del self._serving[rid]
        if rid is not None:
            with contextlib.suppress(Disconnected):
                await self._send(answer)


# Helpers ------------------------------------------------------------------------------------


class _Stop(Exception):
    pass


@dataclass(frozen=True)
class _RawJSON:
    text: str = field(repr=False)


def _error_text(e: BaseException) -> str:
    if isinstance(e, RpcError):
        return e.message
    return str(e) or type(e).__name__


def _b64(data: Bytes) -> str:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: Any) -> bytes:
    return base64.b64decode(value) if value else b""


def _headers(value: Any) -> Headers:
    if not isinstance(value, dict):
        return {}
    return {str(k): [str(v) for v in (vs or [])] for k, vs in value.items()}


def _scope(params: dict[str, Any], host_callback_id: str) -> None:
    if host_callback_id:
        params["host_callback_id"] = host_callback_id


def _http_params(
    url: str,
    method: str,
    headers: Mapping[str, list[str]] | None,
    body: Bytes,
    host_callback_id: str,
    operation_id: str,
    wire_profile: Mapping[str, Any] | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"method": method, "url": url}
    if headers:
        params["headers"] = {k: list(v) for k, v in headers.items()}
    if body:
        params["body"] = _b64(body)
    _scope(params, host_callback_id)
    if operation_id:
        params["operation_id"] = operation_id
    if wire_profile is not None:
        params["wire_profile"] = dict(wire_profile)
    return params


def _model_params(
    entry_protocol: str,
    model: str,
    body: Bytes,
    stream: bool,
    exit_protocol: str,
    headers: Mapping[str, list[str]] | None,
    query: Mapping[str, list[str]] | None,
    alt: str,
    host_callback_id: str,
    forced_provider: str,
    auth_id: str,
    proxy_url: str,
    path: str,
) -> dict[str, Any]:
    params: dict[str, Any] = {"entry_protocol": entry_protocol, "model": model, "stream": stream, "body": _b64(body)}
    optional = {
        "exit_protocol": exit_protocol,
        "alt": alt,
        "host_callback_id": host_callback_id,
        "forced_provider": forced_provider,
        "auth_id": auth_id,
        "proxy_url": proxy_url,
        "path": path,
    }
    params.update({k: v for k, v in optional.items() if v})
    if headers:
        params["headers"] = {k: list(v) for k, v in headers.items()}
    if query:
        params["query"] = {k: list(v) for k, v in query.items()}
    return params


async def _logged(coro: Awaitable[Any]) -> None:
    try:
        await coro
    except Disconnected:
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
