"""One JSON-RPC session: a plugin's stdio pair or one accepted socket connection.

The hot path is short: the transport hands bytes to :meth:`Session.feed`, which frames,
decodes the envelope with msgspec and dispatches straight to the handler. Inline handlers
answer before ``feed`` returns; the others run as tasks in the session's task group and
answer when they finish. Answers are queued and written by one coalescing flush per loop
turn. There is no queue between reader, dispatcher and writer.

The session owns everything it starts: request tasks, stream producers, pending calls to
the plugin. When it ends, all of it is closed or cancelled; nothing outlives it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import msgspec
import orjson

from hostd.errors import (
    HostCallFailed,
    HostError,
    InvalidRequest,
    LimitExceeded,
    MethodNotFound,
    ParseError,
    RemoteError,
    RequestCancelled,
)
from hostd.handlers.base import CallContext, Method
from hostd.rpc.framing import LineFramer
from hostd.rpc.messages import (
    UNSET,
    Envelope,
    RequestId,
    encode_error,
    encode_request,
    encode_result,
    envelope_decoder,
    raw_list_decoder,
)
from hostd.services import Services
from hostd.streams import Stream

CANCEL_METHOD = "$/cancelRequest"
EOF_GRACE_S = 5.0

Reply = Callable[[bytes], None]


class Output(Protocol):
    """The writing half of a transport (a socket, or stdout's pipe)."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...


class InputControl(Protocol):
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class _Cancel(msgspec.Struct):
    id: int | float | str


_cancel_decoder = msgspec.json.Decoder(_Cancel)


class _Batch:
    """Collects the answers of one batch and writes them as one array when the last ends."""

    __slots__ = ("parts", "pending", "write")

    def __init__(self, write: Reply) -> None:
        self.pending = 0
        self.parts: list[bytes] = []
        self.write = write

    def add(self, answer: bytes) -> None:
        self.parts.append(answer)

    def done_one(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self.parts:
            self.write(b"[" + b",".join(self.parts) + b"]")


class Session:
    """See the module docstring. ``kind`` is ``plugin`` or ``control``."""

    def __init__(
        self,
        services: Services,
        methods: Mapping[str, Method[Any]],
        *,
        kind: str = "plugin",
        name: str = "",
        peer_pid: int | None = None,
        peer_uid: int | None = None,
    ) -> None:
        self.services = services
        self.methods = methods
        self.kind = kind
        self.id = services.next_session_id()
        self.plugin_id = name or self.id
        self.hello_done = False
        self.peer_pid = peer_pid
        self.peer_uid = peer_uid
        self.opened_at = time.time()
        self.streams: dict[str, Stream[Any]] = {}
        self.in_flight = 0
        limits = services.config.limits
        self.max_in_flight = limits.max_in_flight
        self._framer = LineFramer(limits.max_line_bytes)
        self._loop = asyncio.get_running_loop()
        self._tg: asyncio.TaskGroup | None = None
        self._output: Output | None = None
        self._input: InputControl | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._write_paused = False
        self._calls: dict[RequestId, asyncio.Task[Any]] = {}
        self._cancel_requested: set[asyncio.Task[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._input_ended = asyncio.Event()
        self._lost = False
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._request_seq = itertools.count(1)
        self._last_drop_warning = 0.0
        self._early: list[bytes] = []
        self._counters = services.counters
        self._ctx = CallContext(self, services, None)  # shared by every call without a scope
        self.closing = False
        self.on_close: list[Callable[[Session], None]] = []
        # Run once when input ends (EOF, disconnect, shutdown), before in-flight calls drain.
        self.on_input_end: list[Callable[[Session], None]] = []
        # Emit streams this (control) session invoked and may read: id -> link (handlers/stream.py).
        self.emit_links: dict[str, Any] = {}

    # Transport side ---------------------------------------------------------------

    def attach(self, output: Output, input_control: InputControl | None) -> None:
        self._output = output
        self._input = input_control

    def feed(self, data: bytes) -> None:
        """Bytes from the plugin: frame, decode and dispatch every complete line."""
        if self.closing:
            return
        if self._tg is None:  # bytes that arrived before run() started
            self._early.append(data)
            return
        decode = envelope_decoder.decode
        reply = self._out.append  # answered within this call: the flush below writes them
        for line in self._framer.feed(data):
            if line is None:
                self._write(encode_error(None, InvalidRequest("message too large")))
            elif line[:1] == b"{":
                try:  # the common case, inlined: one object per line, no stripping
                    env = decode(line)
                except msgspec.DecodeError:
                    self._handle_line(line)  # the slow path words the error
                else:
                    self._dispatch(env, reply, None)
            else:
                self._handle_line(line)
        self._flush()

    def eof(self) -> None:
        """The plugin closed its side: stop reading, finish what is running, end."""
        self._input_end()

    def lost(self, exc: Exception | None) -> None:
        """The connection is gone (or a write failed): nothing more can be answered."""
        self._lost = True
        self._input_end()

    def _input_end(self) -> None:
        """No more requests: stop reading, close the streams and scopes, run ``on_input_end``.

        Called straight from the transport's callback, so a plugin that disconnects with
        thousands of open streams has every upstream connection dropped in this one pass,
        not after its session's task gets its turn on a busy loop.
        """
        if self._input_ended.is_set():
            return
        self._input_ended.set()
        self._stop_reading()
        self._end_streams_and_scopes()
        self._run_input_end()

    def pause_writing(self) -> None:
        # The peer is not reading our answers: stop reading its requests until it does.
        self._write_paused = True
        if self._input is not None:
            self._input.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._input is not None and not self.closing:
            self._input.resume_reading()

    # Lifetime -----------------------------------------------------------------------

    async def run(self, shutdown: asyncio.Event | None = None, grace_s: float = 5.0) -> None:
        """Serve until the input ends (or ``shutdown`` is set), then clean up everything."""
        self.services.sessions[self.id] = self
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                early, self._early = self._early, []
                for data in early:
                    self.feed(data)
                if shutdown is None:
                    await self._input_ended.wait()
                    grace = EOF_GRACE_S
                else:
                    grace = await _first(self._input_ended, shutdown, grace_s)
                self._input_end()  # already done unless the daemon is shutting down
                if not self._lost and self._tasks:
                    try:
                        async with asyncio.timeout(grace):
                            await self._idle.wait()
                    except TimeoutError:
                        pass
                for task in list(self._tasks):
                    task.cancel()
                self._fail_pending("plugin disconnected")
        finally:
            self.services.sessions.pop(self.id, None)
            self._end_streams_and_scopes()
            self._run_input_end()
            self._fail_pending("plugin disconnected")
            for callback in self.on_close:
                callback(self)
            self._flush()
            if self._output is not None and not self._output.is_closing():
                self._output.close()

    def _stop_reading(self) -> None:
        self.closing = True
        if self._input is not None:
            try:
                self._input.pause_reading()
            except (RuntimeError, AttributeError):
                pass

    def _run_input_end(self) -> None:
        callbacks, self.on_input_end = self.on_input_end, []
        for callback in callbacks:
            callback(self)

    def _end_streams_and_scopes(self) -> None:
        self.services.streams.close_owned(self, "session ended")
        self.services.scopes.close_session(self.id)

    def spawn(self, coro: Awaitable[Any], name: str | None = None) -> asyncio.Task[Any]:
        """Start a task owned by this session (stream producers, background work)."""
        if self._tg is None:
            raise RuntimeError("session is not running")
        return self._tg.create_task(coro, name=name)  # type: ignore[arg-type]

    # Reading ------------------------------------------------------------------------

    def _handle_line(self, line: bytes) -> None:
        if line[:1] != b"{":  # the common case needs no strip
            line = line.strip()
            if not line:
                return
            if line[:1] == b"[":
                self._handle_batch(line)
                return
        try:
            env = envelope_decoder.decode(line)
        except msgspec.ValidationError as e:
            self._write(encode_error(None, InvalidRequest(f"invalid request: {e}")))
            return
        except msgspec.DecodeError as e:
            self._write(encode_error(None, ParseError(f"parse error: {e}")))
            return
        self._dispatch(env, self._write, None)

    def _handle_batch(self, data: bytes) -> None:
        try:
            items = raw_list_decoder.decode(data)
        except msgspec.DecodeError as e:
            self._write(encode_error(None, ParseError(f"parse error: {e}")))
            return
        if not items:
            self._write(encode_error(None, InvalidRequest("invalid request: empty batch")))
            return
        batch = _Batch(self._write)
        batch.pending = len(items) + 1  # +1 until every element is dispatched
        for raw in items:
            try:
                env = envelope_decoder.decode(raw)
            except msgspec.DecodeError as e:
                batch.add(encode_error(None, InvalidRequest(f"invalid request: {e}")))
                batch.done_one()
                continue
            self._dispatch(env, batch.add, batch)
        batch.done_one()

    def _dispatch(self, env: Envelope, reply: Reply, batch: _Batch | None) -> None:
        method_name = env.method
        id_ = env.id
        if type(method_name) is not str:
            if id_ is not UNSET and (env.result or env.error):
                self._on_answer(env)
                if batch is not None:
                    batch.done_one()
                return
            self._fail(reply, batch, None, InvalidRequest("invalid request: method is required"))
            return
        if env.jsonrpc != "2.0":
            self._fail(reply, batch, None, InvalidRequest('invalid request: jsonrpc must be "2.0"'))
            return
        if id_ is None:
            self._fail(reply, batch, None, InvalidRequest("invalid request: id must be a number or a string"))
            return
        self._counters.calls += 1
        rid: RequestId | None = None if id_ is UNSET else id_
        answer = reply if rid is not None else None
        method = self.methods.get(method_name)
        if method is None:
            if method_name == CANCEL_METHOD:
                self._cancel_request(env.params)
                if answer is not None:
                    answer(encode_result(rid, {}))
                if batch is not None:
                    batch.done_one()
                return
            if method_name.startswith("host."):
                err: HostError = MethodNotFound(f"unsupported host callback {method_name}")
            else:
                err = MethodNotFound(f"method not found: {method_name}")
            self._fail(answer, batch, rid, err)
            return
        raw = env.params
        try:
            params = method.decoder.decode(raw) if raw else method.decoder.empty()
            callback_id = getattr(params, "host_callback_id", None)
            ctx = self._ctx if not callback_id else self._scoped_context(callback_id)
        except msgspec.DecodeError as e:
            self._fail(answer, batch, rid, method.decoder.error(e))
            return
        except HostError as e:
            self._fail(answer, batch, rid, e)
            return
        if method.inline:
            try:
                out = encode_result(rid, method.fn(ctx, params))
            except HostError as e:
                self._counters.errors += 1
                out = encode_error(rid, e)
            except Exception as e:  # a bug: answer, log, keep serving
                out = self._internal_error(rid, method_name, e)
            if answer is not None:
                answer(out)
            if batch is not None:
                batch.done_one()
            return
        if self.in_flight >= self.max_in_flight:
            if answer is None:
                self._drop_notification(method_name)
                if batch is not None:
                    batch.done_one()
                return
            self._fail(answer, batch, rid, LimitExceeded(f"too many in-flight calls (max {self.max_in_flight})"))
            return
        self.in_flight += 1
        self._idle.clear()
        assert self._tg is not None
        if answer is not None and batch is None:
            answer = self._write  # answered later: schedule its own flush
        task = self._tg.create_task(self._run(method, ctx, params, rid, answer, batch))
        self._tasks.add(task)
        if rid is not None:
            self._calls[rid] = task

    def _scoped_context(self, callback_id: str) -> CallContext:
        scope = self.services.scopes.lookup(callback_id, self.id)
        return CallContext(self, self.services, scope) if scope is not None else self._ctx

    async def _run(
        self,
        method: Method[Any],
        ctx: CallContext,
        params: Any,
        rid: RequestId | None,
        reply: Reply | None,
        batch: _Batch | None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        out: bytes | None = None
        try:
            out = encode_result(rid, await method.fn(ctx, params))
        except HostError as e:
            self._counters.errors += 1
            out = encode_error(rid, e)
        except asyncio.CancelledError:
            if task in self._cancel_requested and task.uncancel() == 0:
                out = encode_error(rid, RequestCancelled("request cancelled"))
            else:
                raise
        except Exception as e:
            out = self._internal_error(rid, method.name, e)
        finally:
            self._cancel_requested.discard(task)
            self._tasks.discard(task)
            if rid is not None and self._calls.get(rid) is task:
                del self._calls[rid]
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()
        if reply is not None:
            reply(out)
        if batch is not None:
            batch.done_one()

    def _fail(self, reply: Reply | None, batch: _Batch | None, rid: RequestId | None, err: HostError) -> None:
        self._counters.errors += 1
        if reply is not None:
            reply(encode_error(rid, err))
        if batch is not None:
            batch.done_one()

    def _internal_error(self, rid: RequestId | None, method: str, e: Exception) -> bytes:
        self._counters.errors += 1
        self.services.logger.error("handler failed", method=method, session=self.id, error=f"{type(e).__name__}: {e}")
        return encode_error(rid, HostCallFailed(f"internal error in {method}: {type(e).__name__}"))

    def _drop_notification(self, method: str) -> None:
        self.services.counters.dropped_notifications += 1
        now = time.monotonic()
        if now - self._last_drop_warning >= 1.0:
            self._last_drop_warning = now
            self.services.logger.warn(
                "notification dropped: too many in-flight calls",
                method=method,
                session=self.id,
                plugin=self.plugin_id,
                dropped_total=self.services.counters.dropped_notifications,
            )

    def _cancel_request(self, raw: msgspec.Raw) -> None:
        try:
            target = _cancel_decoder.decode(bytes(raw) or b"{}").id
        except msgspec.DecodeError:
            return
        task = self._calls.get(target)
        if task is not None and not task.done() and task not in self._cancel_requested:
            self._cancel_requested.add(task)
            # Deferred by one loop turn: a task cancelled before its first step never runs
            # its body, so it could not answer -32800.
            self._loop.call_soon(task.cancel)

    # Writing ------------------------------------------------------------------------

    def _write(self, line: bytes) -> None:
        if self._lost:
            return
        self._out.append(line)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self._output is None:
            return
        out, self._out = self._out, []
        out.append(b"")
        try:
            self._output.write(b"\n".join(out))
        except Exception as e:  # a failed write ends the session at once
            self.lost(e)

    # Calls to the plugin (server -> client) ----------------------------------------------

    async def call(self, method: str, params: Any, timeout_s: float | None = None) -> Any:
        """Send a request to the plugin and wait for its answer.

        Raises :class:`RemoteError` with the plugin's error object, ``TimeoutError``, or
        :class:`HostCallFailed` ``plugin disconnected`` when the session ends first.
        On timeout or cancellation the plugin is sent ``$/cancelRequest``.
        """
        if self.closing or self._lost:
            raise HostCallFailed("plugin disconnected")
        rid = f"hostd-{next(self._request_seq)}"
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = fut
        self._write(encode_request(rid, method, params))
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        except (TimeoutError, asyncio.CancelledError):
            # Cancelling the await cancels ``fut`` too: only an answered call needs no cancel.
            if (fut.cancelled() or not fut.done()) and not self._lost:
                self._write(encode_request(None, CANCEL_METHOD, {"id": rid}))
            raise
        finally:
            self._pending.pop(rid, None)

    def notify(self, method: str, params: Any) -> None:
        self._write(encode_request(None, method, params))

    def _on_answer(self, env: Envelope) -> None:
        rid = env.id
        fut = self._pending.get(rid) if isinstance(rid, str) else None
        if fut is None or fut.done():
            self.services.logger.info("unmatched answer dropped", session=self.id, id=rid)
            return
        if env.error:
            try:
                error = orjson.loads(bytes(env.error))
            except orjson.JSONDecodeError:
                error = None
            if not isinstance(error, dict):
                error = {"code": -32000, "message": "invalid error object from plugin"}
            fut.set_exception(RemoteError(error))
        else:
            fut.set_result(env.result)

    def _fail_pending(self, message: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(HostCallFailed(message))
        self._pending.clear()


async def _first(input_ended: asyncio.Event, shutdown: asyncio.Event, grace_s: float) -> float:
    """Wait for EOF or daemon shutdown; returns the grace period that applies."""
    a = asyncio.ensure_future(input_ended.wait())
    b = asyncio.ensure_future(shutdown.wait())
    try:
        await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        a.cancel()
        b.cancel()
    return EOF_GRACE_S if input_ended.is_set() else grace_s
