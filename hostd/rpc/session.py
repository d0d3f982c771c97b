"""One JSON-RPC session's lifetime: a plugin's stdio pair or one accepted socket connection.

The session owns everything it starts: request tasks (:mod:`hostd.rpc.dispatch`), stream
producers (:meth:`Session.spawn`), calls to its peer (:mod:`hostd.rpc.peer_calls`) and its
writer (:mod:`hostd.rpc.outbox`). When it ends, all of it is closed or cancelled; nothing
outlives it. It never knows what a method does: the method table is passed in.

Fault boundaries held here (PROTOCOL §4):
- **line**: :meth:`feed` frames and dispatches each line under its own ``try``; decoding is
  total (see dispatch), and anything else a line raises is logged and that line answered
  ``-32603`` when it can be; the next line is served. A bug in the framer itself closes
  this session alone.
- **stream producer**: every task started with :meth:`spawn` runs under a guard that logs
  what it raises and tells its owner (the stream ends with ``error: "internal error"``).
- **cleanup**: session-end hooks run one by one; one that raises is logged, the rest run.
The session boundary itself (whatever escapes :meth:`run`) is the daemon's, in
:mod:`hostd.server`.

Reading starts paused: the transport delivers nothing until :meth:`run` has set up the
task group (uvloop hands over a connection's first bytes before the session task starts).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from hostd.errors import HostCallFailed, InternalError, InvalidRequest
from hostd.faults import FAULTS_ON, armed, guarded, inject, log_fault, run_callbacks
from hostd.rpc.dispatch import Dispatcher
from hostd.rpc.framing import LineFramer
from hostd.rpc.long_lines import LongLines, takes
from hostd.rpc.messages import encode_error, envelope_decoder
from hostd.rpc.methods import Method
from hostd.rpc.outbox import Outbox, Output
from hostd.rpc.peer_calls import PeerCalls

if TYPE_CHECKING:
    from hostd.config import Config
    from hostd.logs import Logger
    from hostd.rpc.budget import Budget
    from hostd.rpc.registry import SessionRegistry
    from hostd.scopes import ScopeRegistry
    from hostd.streams import Counters, Stream

EOF_GRACE_S = 5.0


class InputControl(Protocol):
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class SessionServices(Protocol):
    """What a session needs from the daemon (``hostd.services.Services`` provides it)."""

    config: Config
    logger: Logger
    counters: Counters
    scopes: ScopeRegistry
    sessions: SessionRegistry
    output_budget: Budget
    input_budget: Budget
    request_budget: Budget
    scan_budget: Budget
    end_hooks: list[Callable[[Session], None]]


class Session:
    """See the module docstring. ``kind`` is ``plugin`` or ``control``."""

    def __init__(
        self,
        services: SessionServices,
        methods: Mapping[str, Method[Any]],
        *,
        kind: str = "plugin",
        name: str = "",
        peer_pid: int | None = None,
        peer_uid: int | None = None,
        max_in_flight: int | None = -1,
    ) -> None:
        self.services = services
        self.methods = methods
        self.kind = kind
        self.id = services.sessions.next_id()
        self.fixed_name = name
        self.plugin_id = name or self.id
        self.hello_done = False
        self.hello_seen = asyncio.Event()  # set by the first hostd.hello
        self.peer_pid = peer_pid
        self.peer_uid = peer_uid
        self.opened_at = time.time()
        self.streams: dict[str, Stream[Any]] = {}
        limits = services.config.limits
        self._framer = LineFramer(limits.max_line_bytes, limits.max_answer_bytes)
        self._partial = 0  # our share of input_budget.total
        self.outbox = Outbox(
            max_bytes=limits.max_output_bytes,
            budget=services.output_budget,
            on_lost=self.lost,
            on_overflow=self._output_overflow,
        )
        self.peer = PeerCalls(self.outbox.write, self._unmatched_answer)
        self.dispatcher = Dispatcher(self, methods, limits.max_in_flight if max_in_flight == -1 else max_in_flight)
        self._task_group: asyncio.TaskGroup | None = None
        self._input: InputControl | None = None
        self._spawned: set[asyncio.Task[Any]] = set()
        self._early: list[bytes] = []
        self._long = LongLines(self)  # a long line read off the loop, and the lines behind it
        self._input_ended = asyncio.Event()
        self._ended = asyncio.Event()
        self._write_paused = False
        self.closing = False
        self.log_bucket: Any = None  # host.log's rate limit for this session (handlers/log.py)
        self.end_reason = ""

    # Transport side ---------------------------------------------------------------------

    def attach(self, output: Output, input_control: InputControl | None) -> None:
        self.outbox.attach(output)
        self._input = input_control

    @property
    def task_group(self) -> asyncio.TaskGroup:
        if self._task_group is None:
            raise RuntimeError("session is not running")
        return self._task_group

    @property
    def in_flight(self) -> int:
        return self.dispatcher.in_flight

    def feed(self, data: bytes) -> None:
        """Bytes from the peer: frame, decode and dispatch every complete line. Never raises."""
        if self._task_group is None:
            # Before run(): uvloop delivers a pipe's first bytes even when reading was
            # paused in connection_made. Keep them for run() and pause again.
            self._early.append(data)
            self.pause_input()
            return
        if self.closing:
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            lines = self._framer.feed(data)
        except Exception as e:  # a bug in the framer's buffer: this session alone is closed
            log_fault(self.services.logger, "framer failed; closing the session", e, session=self.id)
            self.close("framer fault")
            return
        if self._long.queue is not None:  # a long line is being read: these wait behind it
            self._long.extend(lines)
            self._account_input()
            return
        dispatcher = self.dispatcher
        line_fn = dispatcher.line
        inline = dispatcher.inline
        decode = envelope_decoder.decode
        short = dispatcher.max_short_line  # longer lines take the dispatcher's own way
        reply = self.outbox.queue  # answered within this call: the flush below writes them
        rest = iter(lines)
        for line in rest:
            try:
                if line is None:
                    dispatcher.fail(reply, InvalidRequest("message too large"))
                elif line[:1] == b"{" and len(line) <= short:
                    try:  # the common case, inlined: one object per line, no stripping
                        env = decode(line)
                    except Exception:
                        line_fn(line, reply)  # the slow path words the error
                    else:
                        inline(env, reply, len(line))
                elif takes(line) and not self.closing:  # scanned off the loop, then answered in order
                    self._long.start(line, rest)
                    break
                else:
                    line_fn(line, reply)
            except Exception as e:  # the line boundary
                self.line_failed(e, reply)
        self.outbox.flush()
        self._account_input()

    def line_failed(self, e: Exception, reply: Callable[[bytes], None]) -> None:
        log_fault(self.services.logger, "line failed", e, session=self.id, plugin=self.plugin_id)
        reply(encode_error(None, InternalError("internal error")))

    def _account_input(self) -> None:
        held = self._framer.buffered
        if held == self._partial:
            return
        budget = self.services.input_budget
        budget.total += held - self._partial
        self._partial = held
        if budget.total > budget.limit:
            victim = max(self.services.sessions, key=lambda s: s._partial, default=self)
            self.services.logger.warn(
                "too many partial lines held; closing the session holding the longest",
                session=victim.id,
                plugin=victim.plugin_id,
                held_bytes=victim._partial,
            )
            victim.close("input budget")

    def eof(self) -> None:
        """The peer closed its side: stop reading, finish what is running, end."""
        if self._long.queue is not None:  # lines still queued behind a long one are served first
            self._long.eof_pending = True
            return
        self._input_end("eof")

    def lost(self, exc: BaseException | None = None) -> None:
        """The connection is gone (or a write failed): nothing more can be answered."""
        self.outbox.lost = True
        self._input_end("disconnected")

    def close(self, reason: str) -> None:
        """End this session now: no grace, everything running is cancelled."""
        self.end_reason = self.end_reason or reason
        self._input_end(reason)
        self.dispatcher.cancel_all()
        for task in list(self._spawned):
            task.cancel()
        self.outbox.lost = True
        out = self.outbox._output
        if out is not None and not out.is_closing():
            try:
                abort = getattr(out, "abort", None)
                (abort or out.close)()
            except Exception:
                pass

    def _output_overflow(self, size: int) -> None:
        if self.closing and self.outbox.lost:
            return
        self.services.logger.warn(
            "peer is not reading its answers; closing the session",
            session=self.id,
            plugin=self.plugin_id,
            queued_bytes=size,
            limit=self.outbox.max_bytes,
        )
        self.close("output limit")

    def pause_writing(self) -> None:
        # The peer is not reading our answers: stop reading its requests until it does.
        self._write_paused = True
        self.pause_input()
        self.outbox.account()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.outbox.account()
        self.resume_input()

    # Lifetime -------------------------------------------------------------------------------

    async def run(self, shutdown: asyncio.Event | None = None, grace_s: float = 5.0) -> None:
        """Serve until the input ends (or ``shutdown`` is set), then clean up everything."""
        services = self.services
        services.sessions.add(self)
        services.sessions.hold_fixed(self)
        started = time.monotonic()
        if self.kind == "plugin" or self.peer_pid is not None:
            services.logger.info(
                "session opened",
                session=self.id,
                kind=self.kind,
                plugin=self.plugin_id,
                peer_pid=self.peer_pid,
                peer_uid=self.peer_uid,
            )
        try:
            async with asyncio.TaskGroup() as tg:
                self._task_group = tg
                if FAULTS_ON:
                    inject(f"session:{self.kind}")
                early, self._early = self._early, []
                for data in early:  # what arrived before the session ran (even if EOF followed)
                    self._feed(data)
                self.resume_input()
                grace = await self._wait_end(shutdown, grace_s)
                self._input_end(self.end_reason or "shutdown")
                if not self.outbox.lost and self.dispatcher.tasks:
                    try:
                        async with asyncio.timeout(grace):
                            await self.dispatcher.wait_idle()
                    except TimeoutError:
                        pass
                stopping = shutdown is not None and shutdown.is_set()
                answer = HostCallFailed("hostd shutting down", retryable=True) if stopping else None
                self.dispatcher.cancel_all(answer)
                for task in list(self._spawned):
                    task.cancel()
                self.peer.close()
        finally:
            self._finish()
            if self.kind == "plugin" or self.peer_pid is not None:
                services.logger.info(
                    "session closed",
                    session=self.id,
                    plugin=self.plugin_id,
                    reason=self.end_reason or "eof",
                    duration_s=round(time.monotonic() - started, 3),
                )

    async def _wait_end(self, shutdown: asyncio.Event | None, grace_s: float) -> float:
        """Wait for the input to end or the daemon to stop; returns the grace that applies."""
        if shutdown is None:
            await self._input_ended.wait()
            return EOF_GRACE_S
        a = asyncio.ensure_future(self._input_ended.wait())
        b = asyncio.ensure_future(shutdown.wait())
        try:
            await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            a.cancel()
            b.cancel()
        return EOF_GRACE_S if self._input_ended.is_set() and not shutdown.is_set() else grace_s

    async def wait_closed(self) -> None:
        await self._ended.wait()

    def _finish(self) -> None:
        """Everything the session held is released (also after a crash of its own code)."""
        self._input_end(self.end_reason or "ended")
        self.peer.close()
        self.services.sessions.remove(self)
        budget = self.services.input_budget
        budget.total -= self._partial
        self._partial = 0
        self.outbox.flush()
        self.outbox.release()
        out = self.outbox._output
        if out is not None and not out.is_closing():
            try:
                out.close()
            except Exception:
                pass
        self._ended.set()

    def _input_end(self, reason: str) -> None:
        """No more requests: stop reading, release the plugin id, run the end hooks once.

        Called straight from the transport's callback, so a plugin that disconnects with
        thousands of open streams has every upstream connection dropped in this one pass,
        not after its session's task gets its turn on a busy loop.
        """
        if self._input_ended.is_set():
            return
        self.end_reason = self.end_reason or reason
        self._input_ended.set()
        self.closing = True
        self.pause_input()
        self.services.sessions.release(self)
        hooks: list[Callable[[], object]] = [functools.partial(hook, self) for hook in self.services.end_hooks]
        if FAULTS_ON and armed("callback:session_end"):
            hooks.insert(0, functools.partial(inject, "callback:session_end"))
        run_callbacks(self.services.logger, hooks, session=self.id, plugin=self.plugin_id)

    def resume_input(self) -> None:
        if not self.closing and not self._write_paused and self._long.queue is None and self._input is not None:
            self._input.resume_reading()

    def pause_input(self) -> None:
        if self._input is not None:
            try:
                self._input.pause_reading()
            except Exception:  # a transport that is already closed
                pass

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        name: str | None = None,
        on_crash: Callable[[], None] | None = None,
    ) -> asyncio.Task[Any]:
        """Start a task owned by this session (stream producers, background work).

        The producer boundary: an exception from ``coro`` is logged once, ``on_crash`` runs
        (it ends the task's stream with ``internal error``), and the session goes on.
        """
        if self.closing:
            coro.close()
            raise HostCallFailed("plugin disconnected", retryable=True, data_code="plugin_unavailable")
        logger = self.services.logger
        task = self.task_group.create_task(
            guarded(logger, coro, on_crash, task=name, session=self.id, plugin=self.plugin_id), name=name
        )
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    def _unmatched_answer(self, rid: object) -> None:
        self.services.logger.debug("unmatched answer dropped", session=self.id, id=rid)
