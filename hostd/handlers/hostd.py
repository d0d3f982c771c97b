"""``hostd.hello``: a plugin introduces itself and learns the session's id, methods and limits."""

from __future__ import annotations

from typing import Any

import msgspec

from hostd import SCHEMA_VERSION, __version__
from hostd.handlers.base import CallContext, host_method
from hostd.streams import PIECE_BYTES

EMIT_QUEUE = 16


class HelloParams(msgspec.Struct, frozen=True, kw_only=True):
    plugin_id: str = ""
    schema_version: int = 0


@host_method("hostd.hello", HelloParams, "hostd.hello", inline=True)
def hello(ctx: CallContext, params: HelloParams) -> dict[str, Any]:
    session = ctx.session
    if not session.hello_done:
        session.hello_done = True
        if params.plugin_id.strip():
            session.plugin_id = params.plugin_id.strip()
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
