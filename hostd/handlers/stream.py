"""``host.stream.*``: an executor plugin emitting into the emit stream it was invoked with.

The stream itself (both ends, the chunk queue) is :mod:`hostd.emit`. Handlers here never
touch sockets; they queue chunks.
"""

from __future__ import annotations

from typing import Any

import msgspec

from hostd.emit import Chunk, EmitLink
from hostd.errors import HostCallFailed
from hostd.rpc.messages import EMPTY
from hostd.rpc.methods import CallContext, host_method
from hostd.streams import BufferClosed


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
    # Not a scope-checked method (§7): the key is accepted, under another attribute name.
    caller_callback_id: str = msgspec.field(default="", name="host_callback_id")


class CloseParams(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str = ""
    error: str = ""
    # Not a scope-checked method (§7): the key is accepted, under another attribute name.
    caller_callback_id: str = msgspec.field(default="", name="host_callback_id")


@host_method("host.stream.emit", EmitParams, "stream emit")
async def stream_emit(ctx: CallContext, params: EmitParams) -> dict[str, Any]:
    stream_id = params.stream_id
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
    link = _plugin_link(ctx, params.stream_id)
    if link is not None:
        link.close_from_plugin(params.error)
    return EMPTY


METHODS = (stream_emit, stream_close)

__all__ = ["METHODS"]
