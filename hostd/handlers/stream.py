"""``host.stream.*``: the bridge between an executor plugin that emits chunks and the host reading them.

An emit stream has two ends. The *plugin* session that was invoked owns the stream-table
entry (so the stream counts in that session's ``streams.emit``, obeys ``max_streams`` and
is reaped when idle) and emits into it with ``host.stream.emit`` / ``host.stream.close``.
The *control* session that invoked it reads or aborts it with ``hostd.stream.read`` /
``hostd.stream.close`` (see :mod:`hostd.handlers.control`); only that session can see it.

The chunks live in an :class:`EmitLink`'s own queue of :data:`EMIT_QUEUE` pieces, not in
the table entry's buffer, because the two ends finish differently: a plugin that closes
its stream and then exits must not lose what it queued (the table drops a buffer when its
owner ends), while the host aborting drops everything at once. The link outlives the
table entry only in that case, and for at most ``stream_idle_timeout_s``.

Handlers here never touch sockets; they queue and dequeue chunks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from hostd.errors import HostCallFailed
from hostd.handlers.base import CallContext, host_method
from hostd.handlers.hostd import EMIT_QUEUE
from hostd.streams import BufferClosed, End, PieceBuffer, Stream, read_counted

if TYPE_CHECKING:
    from hostd.rpc.session import Session
    from hostd.scopes import Scope
    from hostd.services import Services

PLUGIN_GONE = "plugin disconnected"
DONE: dict[str, Any] = {"payload": None, "error": "", "done": True}


@dataclass(frozen=True, slots=True)
class Chunk:
    payload: bytes
    error: str = ""


class EmitLink:
    """One emit stream as both ends see it: the table entry, the chunk queue, the scope."""

    __slots__ = ("_expiry", "chunks", "plugin", "reader", "released", "scope", "services", "stream")

    def __init__(self, services: Services, stream: Stream[Any], plugin: Session, reader: Session, scope: Scope) -> None:
        self.services = services
        self.stream = stream
        self.plugin = plugin
        self.reader = reader
        self.scope = scope
        self.chunks: PieceBuffer[Chunk] = PieceBuffer(EMIT_QUEUE)
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
        if isinstance(item, End):
            self.release()
            if item.aborted:
                return dict(DONE)
            return {"payload": None, "error": item.error, "done": True}
        if item.error:
            self.release()
            return {"payload": item.payload or None, "error": item.error, "done": True}
        return {"payload": item.payload or None, "error": "", "done": False}

    async def replace(self, chunks: list[Chunk]) -> None:
        """Inline chunks from the invoke result become the whole content; then it is closed."""
        old, self.chunks = self.chunks, PieceBuffer(max(len(chunks), 1))
        old.abort()  # emits queued or waiting on the old queue are gone / fail "not open"
        for chunk in chunks:
            await self.chunks.put(chunk)  # never waits: the queue holds them all
            if chunk.error:
                break
        self.chunks.finish()

    def abort(self, reason: str = "aborted by the host side") -> None:
        """The host side gave up on the stream: drop what is queued, fail waiting emits."""
        self.chunks.abort()
        self.release(reason)

    def release(self, reason: str = "finished") -> None:
        """The stream is finished for the host side: free the entry, forget it, close the scope."""
        if self.released:
            return
        self.released = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.reader.emit_links.pop(self.id, None)
        self.services.streams.close(self.stream, reason)
        self.services.scopes.close(self.scope)

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


# Which emit streams each control session may read: the ones it invoked, kept on the
# control session itself. When its input ends (disconnect or shutdown) they are aborted. ----


def _abort_all(reader: Session) -> None:
    """The control session ended first: its emit streams are aborted."""
    links, reader.emit_links = reader.emit_links, {}
    for link in list(links.values()):
        link.abort("control session ended")


def open_emit(services: Services, plugin: Session, reader: Session, scope: Scope) -> EmitLink:
    """A new emit stream owned by ``plugin`` and readable by ``reader`` (``LimitExceeded``)."""
    stream = services.streams.open("emit", plugin, capacity=1)  # the entry's own buffer is unused
    link = EmitLink(services, stream, plugin, reader, scope)
    if _abort_all not in reader.on_input_end:
        reader.on_input_end.append(_abort_all)
    reader.emit_links[link.id] = link
    return link


def host_link(reader: Session, stream_id: str) -> EmitLink | None:
    """The emit stream ``stream_id`` if ``reader`` invoked it and has not finished it."""
    link = reader.emit_links.get(stream_id)
    return link if isinstance(link, EmitLink) else None


def _plugin_link(ctx: CallContext, stream_id: str) -> EmitLink | None:
    stream = ctx.services.streams.get(stream_id, ctx.session, "emit")
    if stream is None:
        return None
    link = stream.info.get("emit")
    return link if isinstance(link, EmitLink) else None


# host.stream.* ---------------------------------------------------------------------------


class EmitParams(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str = ""
    payload: bytes | None = None
    error: str = ""
    host_callback_id: str = ""


class CloseParams(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str = ""
    error: str = ""
    host_callback_id: str = ""


@host_method("host.stream.emit", EmitParams, "stream emit")
async def stream_emit(ctx: CallContext, params: EmitParams) -> dict[str, Any]:
    stream_id = params.stream_id.strip()
    if not stream_id:
        raise HostCallFailed("stream id is required")
    link = _plugin_link(ctx, stream_id)
    if link is None:
        raise HostCallFailed(f"stream {stream_id} is not open")
    try:
        await link.emit(Chunk(params.payload or b"", params.error))
    except BufferClosed:
        raise HostCallFailed(f"stream {stream_id} is not open") from None
    return {}


@host_method("host.stream.close", CloseParams, "stream close", inline=True)
def stream_close(ctx: CallContext, params: CloseParams) -> dict[str, Any]:
    link = _plugin_link(ctx, params.stream_id.strip())
    if link is not None:
        link.close_from_plugin(params.error)
    return {}


METHODS = (stream_emit, stream_close)

__all__ = ["DONE", "METHODS", "Chunk", "EmitLink", "host_link", "open_emit"]
