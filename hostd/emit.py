"""Emit streams: the ``host.stream.*`` link between an executor plugin and the host reading it.

An emit stream has two ends. The *plugin* session that was invoked owns the stream-table
entry (so the stream counts in that session's ``streams.emit``, obeys ``max_streams`` and
is reaped when idle) and emits into it with ``host.stream.emit`` / ``host.stream.close``
(:mod:`hostd.handlers.stream`). The *control* session that invoked it reads or aborts it
with ``hostd.stream.read`` / ``hostd.stream.close`` (:mod:`hostd.handlers.control`); only
that session can see it, through the :class:`EmitRegistry`.

The chunks live in an :class:`EmitLink`'s own queue of :data:`EMIT_QUEUE` pieces, not in
the table entry's buffer, because the two ends finish differently: a plugin that closes
its stream and then exits must not lose what it queued (the table drops a buffer when its
owner ends), while the host aborting drops everything at once. The link outlives the
table entry only in that case, for at most ``stream_idle_timeout_s`` and never longer
than its reader's session (whose end aborts it).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from hostd.streams import End, PieceBuffer, Stream, read_counted

if TYPE_CHECKING:
    from hostd.rpc.session import Session
    from hostd.scopes import Scope
    from hostd.services import Services

EMIT_QUEUE = 16
PLUGIN_GONE = "plugin disconnected"
DONE: dict[str, Any] = {"payload": None, "error": "", "done": True}
ABORTED_READ: dict[str, Any] = {"payload": None, "error": "aborted", "done": True}


class Chunk:
    """One emitted piece: its payload, and the error that ends the stream after it (if any).
    Not changed once made (a plain class: a dataclass compiles its methods at every start)."""

    __slots__ = ("error", "payload")

    def __init__(self, payload: bytes, error: str = "") -> None:
        self.payload = payload
        self.error = error

    def __repr__(self) -> str:
        return f"Chunk(payload=<{len(self.payload)} bytes>, error={self.error!r})"


class EmitLink:
    """One emit stream as both ends see it: the table entry, the chunk queue, the scope."""

    __slots__ = ("_expiry", "_queued", "chunks", "plugin", "reader", "released", "scope", "services", "stream")

    def __init__(self, services: Services, stream: Stream[Any], plugin: Session, reader: Session, scope: Scope) -> None:
        self.services = services
        self.stream = stream
        self.plugin = plugin
        self.reader = reader
        self.scope = scope
        self.chunks: PieceBuffer[Chunk] = PieceBuffer(EMIT_QUEUE)
        self._queued = 0  # payload bytes queued: counted in limits.max_total_output_bytes
        self.released = False
        self._expiry: asyncio.TimerHandle | None = None
        stream.info["emit"] = self
        stream.on_close = self._table_entry_closed
        # The idle clock starts when the invoke returns (started()); until then the
        # entry counts as being read so the reaper leaves it alone.
        stream.reading += 1

    @property
    def id(self) -> str:
        return self.stream.id

    # Plugin side ------------------------------------------------------------------------

    async def emit(self, chunk: Chunk) -> None:
        """Queue one chunk, waiting while 16 are queued; :class:`BufferClosed` when not open."""
        chunks = self.chunks  # an emit waiting here fails if the queue is replaced or aborted
        await chunks.put(chunk)
        self._count(len(chunk.payload))
        if chunk.error:
            chunks.finish()  # an error chunk is the last one

    def close_from_plugin(self, error: str) -> None:
        """Graceful end: what is queued is still delivered, then the error (if any)."""
        self.chunks.finish(error)

    # Host side ----------------------------------------------------------------------------

    def started(self) -> None:
        """The invoke returned the stream id to the host: start the idle clock."""
        self.stream.reading -= 1
        self.stream.last_active = time.monotonic()

    async def read(self) -> dict[str, Any]:
        item = await read_counted(self.stream, self.chunks)
        if not isinstance(item, End):
            self._count(-len(item.payload))
        if isinstance(item, End):
            self.release()
            if item.aborted:
                return dict(ABORTED_READ)
            return {"payload": None, "error": item.error, "done": True}
        if item.error:
            self.release()
            return {"payload": item.payload or None, "error": item.error, "done": True}
        return {"payload": item.payload or None, "error": "", "done": False}

    async def replace(self, chunks: list[Chunk]) -> None:
        """Inline chunks from the invoke result become the whole content; then it is closed."""
        old, self.chunks = self.chunks, PieceBuffer(max(len(chunks), 1))
        old.abort()  # emits queued or waiting on the old queue are gone / fail "not open"
        self._count(-self._queued)
        for chunk in chunks:
            await self.chunks.put(chunk)  # never waits: the queue holds them all
            self._count(len(chunk.payload))
            if chunk.error:
                break
        self.chunks.finish()

    def abort(self, reason: str = "aborted by the host side") -> None:
        """The host side gave up on the stream: drop what is queued, fail waiting emits."""
        self.chunks.abort()
        self._count(-self._queued)
        self.release(reason)

    def release(self, reason: str = "finished") -> None:
        """The stream is finished for the host side: free the entry, forget it, close the scope."""
        if self.released:
            return
        self.released = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.services.emit.forget(self)
        self.services.streams.close(self.stream, reason)
        self.services.scopes.close(self.scope)

    def _count(self, size: int) -> None:
        """Queued chunks wait for a reader as unread answers do: they share the daemon's budget."""
        self._queued += size
        self.services.output_budget.total += size

    # Table side ---------------------------------------------------------------------------

    def _table_entry_closed(self, _stream: Stream[Any]) -> None:
        """The table dropped the entry: released by us, reaped idle, or its plugin session ended."""
        if self.released:
            return
        plugin_ended = self.plugin.closing or self.services.sessions.get(self.plugin.id) is not self.plugin
        if not plugin_ended:  # reaped: nobody read it for stream_idle_timeout_s
            self.abort("idle")
            return
        self.chunks.finish(PLUGIN_GONE)  # no-op when the plugin had already closed it
        # The host may still drain what was queued; if it never does, forget it later.
        idle = self.services.config.limits.stream_idle_timeout_s
        self._expiry = asyncio.get_running_loop().call_later(idle, self.abort, "never read after its plugin ended")


class EmitRegistry:
    """Which emit streams each control session may read: the ones it invoked.

    When a reader's input ends its links are aborted; a link aborted that way, or by its
    reader's ``hostd.stream.close``, answers one more read with ``error: "aborted"`` (from
    any control session: the invoker may have been a ``hostd call`` that is gone), then it
    is unknown like any other id.
    """

    MAX_REMEMBERED = 4096

    def __init__(self) -> None:
        self._by_reader: dict[str, dict[str, EmitLink]] = {}
        self._aborted: dict[str, None] = {}

    def open(self, services: Services, plugin: Session, reader: Session, scope: Scope) -> EmitLink:
        """A new emit stream owned by ``plugin`` and readable by ``reader`` (``LimitExceeded``)."""
        stream = services.streams.open("emit", plugin, capacity=1)  # the entry's own buffer is unused
        link = EmitLink(services, stream, plugin, reader, scope)
        self._by_reader.setdefault(reader.id, {})[link.id] = link
        return link

    def for_reader(self, reader: Session, stream_id: str) -> EmitLink | None:
        """The emit stream ``stream_id`` if ``reader`` invoked it and has not finished it."""
        links = self._by_reader.get(reader.id)
        return links.get(stream_id) if links is not None else None

    def take_aborted(self, stream_id: str) -> bool:
        """True once for a stream aborted by its reader or by its reader leaving."""
        return self._aborted.pop(stream_id, False) is None

    def remember_aborted(self, stream_id: str) -> None:
        self._aborted[stream_id] = None
        while len(self._aborted) > self.MAX_REMEMBERED:
            del self._aborted[next(iter(self._aborted))]

    def forget(self, link: EmitLink) -> None:
        links = self._by_reader.get(link.reader.id)
        if links is not None:
            links.pop(link.id, None)
            if not links:
                del self._by_reader[link.reader.id]

    def close_reader(self, reader: Session) -> None:
        """The control session ended first: its emit streams are aborted (session-end hook)."""
        links = self._by_reader.pop(reader.id, {})
        for link in list(links.values()):
            link.abort("control session ended")
            self.remember_aborted(link.id)
