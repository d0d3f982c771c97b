"""Envelope → method → run: the one place where exceptions become wire errors.

``Dispatcher.line`` takes one framed line and answers it. Decoding is total: whatever a line
holds (invalid UTF-8, nesting deeper than msgspec's limit, a wrong type anywhere) becomes
``-32700``/``-32600``/``-32602`` and the next line is served. Inline handlers (no I/O), and the
fast twin of a waiting one when it can answer at once, run right here (the commonest call by
the shortest way, ``Dispatcher.inline``); the others run as tasks in the session's task group,
counted against ``max_in_flight`` and holding their line's bytes in ``max_total_request_bytes``.
The fault boundary of a request is :meth:`Dispatcher._error`: a :class:`~hostd.errors.WireError`
is answered as itself, anything else as ``-32603`` ``internal error in <method>``, logged once
with its traceback under the plugin id. Batches (:mod:`hostd.rpc.batches`) follow JSON-RPC 2.0
with ``limits.max_batch``; each element counts against ``max_in_flight`` in order, and the
answer array is written when the last ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import msgspec

from hostd.errors import (
    InternalError,
    InvalidRequest,
    LimitExceeded,
    MethodNotFound,
    ParseError,
    RequestCancelled,
    WireError,
)
from hostd.faults import FAULTS_ON, inject, log_fault
from hostd.rpc.batches import Batch, answer_batch
from hostd.rpc.messages import (
    EMPTY,
    EMPTY_ANSWER,
    ID_LIMIT,
    LONG_LINE,
    UNSET,
    Envelope,
    ParamsDecoder,
    PeerAnswer,
    RequestId,
    cancel_target,
    decode_envelope,
    decode_long,
    encode_error,
    encode_result,
)
from hostd.rpc.methods import NOT_READY, CallContext, Held, Method
from hostd.rpc.peer_calls import CANCEL_METHOD

if TYPE_CHECKING:
    from hostd.rpc.session import Session

Reply = Callable[[bytes], None]
LOG_TRACE = 5  # hostd.logs' numeric level of trace


class Dispatcher:
    __slots__ = (
        "_calls",
        "_cancel_requested",
        "_ctx",
        "_idle",
        "_inline",
        "_last_drop_warning",
        "_logger",
        "_loop",
        "answer_on_cancel",
        "in_flight",
        "max_in_flight",
        "max_line",
        "max_short_line",
        "methods",
        "session",
        "tasks",
    )

    def __init__(self, session: Session, methods: Mapping[str, Method[Any]], max_in_flight: int | None) -> None:
        self.session = session
        self.methods = methods
        # Dispatcher.inline's methods, looked up by a message's method (a str, or UNSET: none).
        self._inline: dict[object, Method[Any]] = {name: m for name, m in methods.items() if m.inline}
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        # Lines longer than this are answers only (the framer allows those up to max_answer_bytes).
        self.max_line = session.services.config.limits.max_line_bytes + 1  # +1: a trailing \r
        self.max_short_line = min(self.max_line, LONG_LINE)  # decoded inline by Session._feed
        self.tasks: set[asyncio.Task[Any]] = set()
        self._calls: dict[RequestId, asyncio.Task[Any]] = {}
        self._cancel_requested: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop = asyncio.get_running_loop()
        self._last_drop_warning = 0.0
        self._logger = session.services.logger
        # Shared by every call without a scope; handlers see the daemon's Services.
        self._ctx = CallContext(session, cast(Any, session.services), None)
        # Set when the daemon's grace period ends: calls still running are answered this.
        self.answer_on_cancel: WireError | None = None

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def cancel_all(self, answer: WireError | None = None) -> None:
        self.answer_on_cancel = answer
        for task in list(self.tasks):
            task.cancel()

    # Lines ------------------------------------------------------------------------------

    def line(self, line: bytes, reply: Reply) -> None:
        """Answer one framed line (``reply`` writes an answer)."""
        if line[:1] != b"{":  # the common case needs no strip
            line = line.strip()
            if not line:
                return
            if line[:1] == b"[":
                if len(line) > self.max_line:  # answers never come in batches
                    self._fail(reply, None, None, InvalidRequest("message too large"))
                    return
                answer_batch(self, line, reply)
                return
        if LONG_LINE < len(line) <= self.max_line:
            typed = decode_long(line, self.decoder)
            if typed is not None:
                self.envelope(typed, reply, None, len(line), typed=True)
                return
        self.decoded(decode_envelope(line), len(line), reply)

    def decoded(self, env: Envelope | WireError | PeerAnswer, size: int, reply: Reply, typed: bool = False) -> None:
        """Answer what a line of ``size`` bytes decoded to (here, or off the loop: ``rpc/scan.py``)."""
        if isinstance(env, WireError):
            self._fail(reply, None, None, env)
        elif isinstance(env, PeerAnswer):
            self.session.peer.answer_unreadable()
        elif size > self.max_line and (type(env.method) is str or not (env.result or env.error)):
            # The framer let it grow as a possible answer; it is not one.
            self._fail(reply, None, None, InvalidRequest("message too large"))
        else:
            self.envelope(env, reply, None, size, typed)

    def decoder(self, name: str) -> ParamsDecoder | None:
        return None if (method := self.methods.get(name)) is None else method.decoder

    def fail(self, reply: Reply, err: WireError) -> None:
        """Answer a line that could not be read (``id: null``)."""
        self._fail(reply, None, None, err)

    # One message --------------------------------------------------------------------------

    def inline(self, env: Envelope, reply: Reply, size: int) -> None:
        """Session._feed's way in: the common call (an inline method, an integer id, params, no scope)
        answered as envelope() would, in a third of its steps; anything else goes to envelope()."""
        id_ = env.id
        method = self._inline.get(env.method)
        if method is None or type(id_) is not int or self._logger.threshold <= LOG_TRACE:  # trace: envelope() logs
            self.envelope(env, reply, None, size)
            return
        if -ID_LIMIT <= id_ < ID_LIMIT and env.jsonrpc == "2.0" and env.params:
            try:
                params = method.decoder.exact(env.params)
            except (msgspec.DecodeError, RecursionError):  # Go-cased keys, or a mistake: worded there
                params = None
            if params is not None and not getattr(params, "host_callback_id", None):  # no scope
                self.session.services.counters.calls += 1
                try:
                    if FAULTS_ON:
                        inject(f"handler:{method.name}")
                    result = method.fn(self._ctx, params)  # and encode_result's EMPTY test, inlined:
                    reply(EMPTY_ANSWER % id_ if result is EMPTY else encode_result(id_, result))
                except Exception as e:
                    reply(encode_error(id_, self._error(method.name, e)))
                return
        self.envelope(env, reply, None, size)

    def envelope(self, env: Envelope, reply: Reply, batch: Batch | None, size: int, typed: bool = False) -> None:
        """Answer one message of ``size`` bytes; ``typed``: its params are decoded already (``decode_long``)."""
        method_name = env.method
        id_ = env.id
        session = self.session
        if type(method_name) is not str:
            if env.result or env.error:  # an answer to a request hostd sent: never answered
                session.peer.answer(env)
                if batch is not None:
                    batch.done_one()
                return
            self._fail(reply, batch, None, InvalidRequest("invalid request: method is required"))
            return
        if env.jsonrpc != "2.0":
            self._fail(reply, batch, None, InvalidRequest('invalid request: jsonrpc must be "2.0"'))
            return
        if id_ is None or (type(id_) is not str and id_ is not UNSET and not -ID_LIMIT <= id_ < ID_LIMIT):  # type: ignore[operator]
            # (an id beyond 64 bits could not be echoed exactly: the encoder writes it as a float)
            self._fail(reply, batch, None, InvalidRequest("invalid request: id must be a number or a string"))
            return
        counters = session.services.counters
        counters.calls += 1
        rid: RequestId | None = None if id_ is UNSET else id_
        answer = reply if rid is not None else None
        method = self.methods.get(method_name)
        if method is None:
            if method_name == CANCEL_METHOD:
                self._cancel(env.params)
                if answer is not None:
                    answer(encode_result(rid, {}))
                if batch is not None:
                    batch.done_one()
                return
            if method_name.startswith("host."):
                err: WireError = MethodNotFound(f"unsupported host callback {method_name}")
            else:
                err = MethodNotFound(f"method not found: {method_name}")
            self._fail(answer, batch, rid, err)
            return
        if self._logger.threshold <= LOG_TRACE:  # trace shows every request line
            self._logger.trace("request", method=method_name, id=rid, session=session.id)
        raw = env.params
        decoder = method.decoder
        try:
            if typed:  # decoded already, or the error that decoding them found (hostd.rpc.scan)
                params = cast(Any, raw)
                params = decoder.empty() if params is UNSET else params
                if isinstance(params, WireError):
                    raise params
            elif not raw:
                params = decoder.empty()
            else:
                try:  # msgspec's own bound method: no Python frame on the common path
                    params = decoder.exact(raw)
                except msgspec.ValidationError:  # Go-cased keys, or a real mistake
                    params = decoder.recover(raw)
            callback_id = getattr(params, "host_callback_id", None)
            ctx = self._ctx if not callback_id else self._scoped(callback_id)
        except msgspec.DecodeError as e:
            self._fail(answer, batch, rid, method.decoder.error(e))
            return
        except RecursionError:
            self._fail(answer, batch, rid, ParseError("parse error: nesting too deep"))
            return
        except WireError as e:
            self._fail(answer, batch, rid, e)
            return
        except Exception as e:  # a decoder or scope bug: this request alone fails
            self._fail(answer, batch, rid, self._internal(method_name, e))
            return
        now = method.now  # an inline handler, or the fast twin of one that may wait (not while output is full)
        if now is not None and (method.inline or not session.services.output_budget.full):
            try:
                if FAULTS_ON:
                    inject(f"handler:{method_name}")
                result = now(ctx, params)
                out = None if result is NOT_READY else encode_result(rid, result)
            except Exception as e:
                out = encode_error(rid, self._error(method_name, e))
            if out is not None:
                if answer is not None:
                    answer(out)
                if batch is not None:
                    batch.done_one()
                return
        refusal = self._admit(size)
        if refusal is not None:
            if answer is None:
                self._drop_notification(method_name)
                if batch is not None:
                    batch.done_one()
                return
            self._fail(answer, batch, rid, refusal)
            return
        self.in_flight += 1
        self._idle.clear()
        session.services.request_budget.total += size  # held until the call ends
        if answer is not None and batch is None:
            answer = session.outbox.write  # answered later: schedules its own flush
        task = session.task_group.create_task(self._run(method, ctx, params, rid, answer, batch, size))
        self.tasks.add(task)
        if rid is not None:
            self._calls[rid] = task

    def _admit(self, size: int) -> WireError | None:
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            return LimitExceeded(f"too many in-flight calls (max {self.max_in_flight})")
        services = self.session.services
        if services.output_budget.full:
            return LimitExceeded("hostd output buffers are full; retry later", retryable=True)
        requests = services.request_budget
        if requests.total + size > requests.limit:
            return LimitExceeded("hostd request buffers are full; retry later", retryable=True)
        return None

    def _scoped(self, callback_id: str) -> CallContext:
        session = self.session
        scope = session.services.scopes.lookup(callback_id, session.id)
        return CallContext(session, cast(Any, session.services), scope) if scope is not None else self._ctx

    async def _run(
        self,
        method: Method[Any],
        ctx: CallContext,
        params: Any,
        rid: RequestId | None,
        reply: Reply | None,
        batch: Batch | None,
        size: int,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        out: bytes | None = None
        release = None
        try:
            if FAULTS_ON:
                inject(f"handler:{method.name}")
            result = await method.fn(ctx, params)
            if type(result) is Held:
                release = result.release
                result = result.value
            out = encode_result(rid, result)
        except asyncio.CancelledError:
            if task in self._cancel_requested and task.uncancel() == 0:
                out = encode_error(rid, RequestCancelled("request cancelled"))
            elif self.answer_on_cancel is not None and task.uncancel() == 0:
                out = encode_error(rid, self.answer_on_cancel)
            else:
                raise
        except Exception as e:
            out = encode_error(rid, self._error(method.name, e))
        finally:
            self._cancel_requested.discard(task)
            self.tasks.discard(task)
            if rid is not None and self._calls.get(rid) is task:
                del self._calls[rid]
            self.in_flight -= 1
            self.session.services.request_budget.total -= size
            if self.in_flight == 0:
                self._idle.set()
        if reply is not None:
            reply(out)
        if release is not None:
            if reply is None:
                release()
            elif batch is not None:
                batch.hold(release)
            else:
                self.session.outbox.after_written(release)
        if batch is not None:
            batch.done_one()

    # Errors ---------------------------------------------------------------------------------

    def _error(self, method: str, e: Exception) -> WireError:
        """The request fault boundary: what ``e`` answers."""
        if isinstance(e, WireError):
            self.session.services.counters.errors += 1
            return e
        return self._internal(method, e)

    def _internal(self, method: str, e: BaseException) -> InternalError:
        session = self.session
        session.services.counters.errors += 1
        log_fault(
            session.services.logger, "handler failed", e, method=method, session=session.id, plugin=session.plugin_id
        )
        return InternalError(f"internal error in {method}")

    def _fail(self, reply: Reply | None, batch: Batch | None, rid: RequestId | None, err: WireError) -> None:
        self.session.services.counters.errors += 1
        if reply is not None:
            reply(encode_error(rid, err))
        if batch is not None:
            batch.done_one()

    def _drop_notification(self, method: str) -> None:
        services = self.session.services
        services.counters.dropped_notifications += 1
        now = time.monotonic()
        if now - self._last_drop_warning >= 1.0:
            self._last_drop_warning = now
            services.logger.warn(
                "notification dropped: too many in-flight calls",
                method=method,
                session=self.session.id,
                plugin=self.session.plugin_id,
                dropped_total=services.counters.dropped_notifications,
            )

    def _cancel(self, raw: msgspec.Raw) -> None:
        target = cancel_target(raw)
        task = None if target is None else self._calls.get(target)
        if task is not None and not task.done() and task not in self._cancel_requested:
            self._cancel_requested.add(task)
            # Deferred one loop turn: a task cancelled before its first step could not answer -32800.
            self._loop.call_soon(task.cancel)
