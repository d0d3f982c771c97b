"""``hostd.hello``: a plugin introduces itself and learns the session's id, methods and limits."""

from __future__ import annotations

from typing import Any

import msgspec

from hostd import SCHEMA_VERSION, __version__
from hostd.emit import EMIT_QUEUE
from hostd.rpc.methods import CallContext, host_method
from hostd.streams import PIECE_BYTES


class HelloParams(msgspec.Struct, frozen=True, kw_only=True):
    plugin_id: str = ""
    schema_version: int = 0


@host_method("hostd.hello", HelloParams, "hostd.hello", inline=True)
def hello(ctx: CallContext, params: HelloParams) -> dict[str, Any]:
    session = ctx.session
    if params.plugin_id.strip() and params.plugin_id.strip() != session.plugin_id:
        # Only a successful hello sets the id; a refused one keeps the previous id.
        ctx.services.sessions.claim(session, params.plugin_id)
    elif params.plugin_id.strip() and session.fixed_name:
        ctx.services.sessions.claim(session, params.plugin_id)  # re-hold a fixed id if it was free
    if not session.hello_done:
        session.hello_done = True
        session.hello_seen.set()
        ctx.services.logger.info(
            "hello plugin", plugin=session.plugin_id, session=session.id, schema_version=params.schema_version
        )
    limits = ctx.services.config.limits
    return {
        "server": "hostd",
        "version": __version__,
        "schema_version": SCHEMA_VERSION,
        "session": session.id,
        "methods": sorted(session.methods),
        "limits": {
            "max_line_bytes": limits.max_line_bytes,
            "max_in_flight": limits.max_in_flight,
            "max_streams": limits.max_streams,
            "stream_idle_timeout_s": limits.stream_idle_timeout_s,
            "emit_queue": EMIT_QUEUE,
            "stream_piece_bytes": PIECE_BYTES,
        },
    }


METHODS = (hello,)
