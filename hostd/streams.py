"""The stream table: every open HTTP, model and emit stream, keyed by an unguessable id.

A stream belongs to the session that opened it; another session's id behaves exactly as
an unknown one. Each stream has a bounded buffer between its producer (an upstream task,
or a plugin emitting) and its readers, so memory per stream is bounded and a slow reader
slows the upstream down. Closing a stream aborts its buffer and cancels its producer task;
a session's streams are all closed when the session ends, and idle ones are reaped.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from hostd.buffers import ABORTED, ENDED, BufferClosed, End, PieceBuffer
from hostd.errors import HostCallFailed, LimitExceeded
from hostd.faults import FAULTS_ON, armed, inject, inject_once

if TYPE_CHECKING:
    from hostd.logs import Logger

StreamKind = Literal["http", "model", "emit"]
KINDS: tuple[StreamKind, ...] = ("http", "model", "emit")
PIECE_BYTES = 32 * 1024

T = TypeVar("T")

__all__ = ["ABORTED", "ENDED", "KINDS", "PIECE_BYTES", "BufferClosed", "End", "PieceBuffer", "Stream", "StreamTable"]


class StreamOwner(Protocol):
    """What the table needs from a session: an id, its streams and a place to start tasks."""

    @property
    def id(self) -> str: ...

    @property
    def streams(self) -> dict[str, Stream[Any]]: ...

    @property
    def closing(self) -> bool: ...

    def spawn(
        self, coro: Any, name: str | None = None, on_crash: Callable[[], None] | None = None
    ) -> asyncio.Task[Any]: ...


class Stream(Generic[T]):
    __slots__ = (
        "abort_upstream",
        "buffer",
        "closed",
        "id",
        "info",
        "kind",
        "last_active",
        "on_close",
        "owner",
        "reading",
        "scope_id",
        "task",
    )

    def __init__(self, kind: StreamKind, owner: StreamOwner, capacity: int) -> None:
        # secrets.token_hex(16) is exactly this; importing secrets (hashlib, random) costs ~3 ms at start.
        self.id = os.urandom(16).hex()
        self.kind = kind
        self.owner = owner
        self.buffer: PieceBuffer[T] = PieceBuffer(capacity, PIECE_BYTES if kind == "model" else 0)
        self.task: asyncio.Task[Any] | None = None
        self.last_active = time.monotonic()
        self.reading = 0
        self.scope_id: str | None = None
        self.on_close: Callable[[Stream[T]], None] | None = None
        self.closed = False
        self.info: dict[str, Any] = {}
        # Drops the upstream connection synchronously on close (set once the response is known).
        self.abort_upstream: Callable[[], None] | None = None


async def _injected(point: str) -> None:
    inject(point)


async def read_counted(stream: Stream[Any], buffer: PieceBuffer[T]) -> T | End:
    """``buffer.get()`` with ``stream`` counted as read: a pending read keeps it from being
    reaped, and each finished one restarts its idle clock."""
    stream.reading += 1
    try:
        return await buffer.get()
    finally:
        stream.reading -= 1
        stream.last_active = time.monotonic()


class Counters:
    """Daemon-wide totals reported by ``hostd.status``."""

    __slots__ = (
        "calls",
        "dropped_log_lines",
        "dropped_notifications",
        "errors",
        "lines_scanned",
        "session_crashes",
        "streams_closed",
        "streams_opened",
        "streams_reaped",
    )

    def __init__(self) -> None:
        self.session_crashes = 0
        self.dropped_log_lines = 0
        self.calls = 0
        self.errors = 0
        self.streams_opened = 0
        self.streams_closed = 0
        self.streams_reaped = 0
        self.dropped_notifications = 0
        self.lines_scanned = 0  # long lines read off the loop (hostd.rpc.scan)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class StreamTable:
    def __init__(
        self,
        *,
        max_per_session: int,
        idle_timeout_s: float,
        buffer_pieces: int,
        counters: Counters,
        logger: Logger,
    ) -> None:
        self.max_per_session = max_per_session
        self.idle_timeout_s = idle_timeout_s
        self.buffer_pieces = buffer_pieces
        self.counters = counters
        self.logger = logger
        self._streams: dict[str, Stream[Any]] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, kind: StreamKind, owner: StreamOwner, *, capacity: int | None = None) -> Stream[Any]:
        """Register a new stream owned by ``owner`` (``LimitExceeded`` past ``max_streams``)."""
        if owner.closing:  # opened while its session ends: it could never be read or closed
            raise HostCallFailed("plugin disconnected", retryable=True, data_code="plugin_unavailable")
        if len(owner.streams) >= self.max_per_session:
            raise LimitExceeded(f"too many open streams (max {self.max_per_session})")
        stream: Stream[Any] = Stream(kind, owner, capacity or self.buffer_pieces)
        self._streams[stream.id] = stream
        owner.streams[stream.id] = stream
        self.counters.streams_opened += 1
        return stream

    def start(self, stream: Stream[Any], coro: Any) -> None:
        """Run ``coro`` as the stream's producer, in its owner's task group.

        A producer that raises ends its stream with ``error: "internal error"`` (the owner's
        guard logs it); readers see that error and ``done``.
        """

        def crashed() -> None:
            if not stream.closed:
                stream.buffer.finish("internal error")

        if stream.closed:  # closed before its producer could start
            coro.close()
            return
        if FAULTS_ON and armed(f"producer:{stream.kind}"):
            coro.close()
            coro = _injected(f"producer:{stream.kind}")
        stream.task = stream.owner.spawn(coro, name=f"{stream.kind}-stream-{stream.id[:8]}", on_crash=crashed)

    def get(self, stream_id: str, owner: StreamOwner, kind: StreamKind | None = None) -> Stream[Any] | None:
        """The open stream ``stream_id`` if ``owner`` owns it (and it is of ``kind``)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.owner is not owner or (kind is not None and stream.kind != kind):
            return None
        return stream

    async def read(self, stream: Stream[T]) -> T | End:
        """Wait for the next piece; at the end the stream leaves the table."""
        item = await read_counted(stream, stream.buffer)
        if isinstance(item, End):
            self._remove(stream)
        return item

    def read_nowait(self, stream: Stream[T]) -> T | End | None:
        """:meth:`read` when it would not wait, else None (the caller awaits :meth:`read`).

        Never ahead of a read already under way (the buffer serves reads in arrival order)."""
        item = stream.buffer.get_nowait()
        if item is not None:
            stream.last_active = time.monotonic()
            if isinstance(item, End):
                self._remove(stream)
        return item

    def close(self, stream: Stream[Any], reason: str = "closed") -> None:
        """Close now: drop buffered pieces, cancel the producer, free the entry. Idempotent."""
        if stream.closed:
            return
        stream.buffer.abort()
        if stream.abort_upstream is not None:
            stream.abort_upstream()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        self._remove(stream)
        self.logger.debug("stream closed", stream_id=stream.id, kind=stream.kind, reason=reason)

    def close_id(self, stream_id: str, owner: StreamOwner, kind: StreamKind, reason: str) -> None:
        """``*.stream_close``: close ``owner``'s stream of ``kind`` if open; unknown ids are fine."""
        stream = self.get(stream_id, owner, kind)  # compared exactly as sent (§3)
        if stream is not None:
            self.close(stream, reason)

    def close_owned(self, owner: StreamOwner, reason: str) -> int:
        streams = list(owner.streams.values())
        for stream in streams:
            self.close(stream, reason)
        return len(streams)

    def _remove(self, stream: Stream[Any]) -> None:
        if stream.closed:
            return
        stream.closed = True
        self._streams.pop(stream.id, None)
        stream.owner.streams.pop(stream.id, None)
        self.counters.streams_closed += 1
        if stream.on_close is not None:
            callback, stream.on_close = stream.on_close, None
            callback(stream)

    def reap_idle(self, now: float | None = None) -> int:
        """Close streams with no read pending and none completed for ``idle_timeout_s``."""
        now = time.monotonic() if now is None else now
        cutoff = now - self.idle_timeout_s
        idle = [s for s in self._streams.values() if s.reading == 0 and s.last_active < cutoff]
        for stream in idle:
            self.logger.warn(
                "idle stream reaped",
                stream_id=stream.id,
                kind=stream.kind,
                session=stream.owner.id,
                idle_s=round(now - stream.last_active, 1),
            )
            self.close(stream, "idle")
            self.counters.streams_reaped += 1
        return len(idle)

    async def run_reaper(self) -> None:
        """Reap idle streams until cancelled (owned by the daemon's task group)."""
        interval = min(max(self.idle_timeout_s / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            if FAULTS_ON:
                inject_once("reaper")
            self.reap_idle()
