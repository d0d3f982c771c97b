"""``hostd.*`` on the control socket: the host side (the proxy, or an operator) talking to hostd.

``hostd.status`` reports sessions, open streams and counters. ``hostd.invoke`` calls a
method on a plugin session inside a fresh callback scope (and, for streaming executors,
a fresh emit stream); ``hostd.stream.read`` / ``hostd.stream.close`` are the host's end of
those emit streams (the bridge itself lives in :mod:`hostd.handlers.stream`).

Scope lifetime (PROTOCOL.md §10): the scope closes when the invoke returns, or, when it
opened a stream, when that stream is finished for the host side (its end or error was
read, or it was aborted). A failed, timed-out or cancelled invoke aborts its stream and
closes its scope at once. A plugin's result is passed through as the bytes it sent,
unless inline ``chunks`` have to be taken out of it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import orjson

from hostd import __version__
from hostd.emit import ABORTED_READ, DONE, Chunk, EmitLink
from hostd.errors import HostCallFailed, InvalidParams
from hostd.rpc.messages import fragment
from hostd.rpc.methods import CallContext, host_method
from hostd.streams import KINDS

if TYPE_CHECKING:
    from hostd.rpc.session import Session
    from hostd.services import Services

DEFAULT_TIMEOUT_S = 600.0


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


REGISTRATION_METHODS = ("plugin.register", "plugin.reconfigure")


def _registration(services: Services, plugin_id: str) -> dict[str, Any]:
    found = services.sessions.registrations.get(plugin_id)
    return {"registration": fragment(bytes(found.result))} if found is not None and found.result else {}


def _process() -> dict[str, Any]:
    pid = os.getpid()
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = -1
    rss = 0
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    return {"pid": pid, "fds": fds, "tasks": len(asyncio.all_tasks()), "rss_bytes": rss}


# hostd.status ----------------------------------------------------------------------------


class StatusParams(msgspec.Struct, frozen=True, kw_only=True):
    pass


@host_method("hostd.status", StatusParams, "hostd.status", inline=True)
def status(ctx: CallContext, _params: StatusParams) -> dict[str, Any]:
    services = ctx.services
    sessions = []
    control_sessions = 0
    for session in services.sessions:
        if session.kind != "plugin":
            control_sessions += 1
            continue
        streams = dict.fromkeys(KINDS, 0)
        for stream in session.streams.values():
            streams[stream.kind] += 1
        sessions.append(
            {
                "session": session.id,
                "plugin_id": session.plugin_id,
                "peer_pid": session.peer_pid,
                "peer_uid": session.peer_uid,
                "opened_at": _rfc3339(session.opened_at),
                "in_flight": session.in_flight,
                "streams": streams,
                **_registration(services, session.plugin_id),
            }
        )
    return {
        "version": __version__,
        "uptime_s": round(time.monotonic() - services.started_at, 3),
        "sessions": sessions,
        "control_sessions": control_sessions,
        "process": _process(),
        "listen": services.listen,
        "control": services.config.control or None,
        "config_file": services.config_file,
        "limits": msgspec.structs.asdict(services.config.limits),
        "buffered": {  # bytes held now against the daemon-wide limits
            "partial_line_bytes": services.input_budget.total,
            "output_bytes": services.output_budget.total,
            "request_bytes": services.request_budget.total,
            "scan_bytes": services.scan_budget.total,  # long lines waiting for the scanner
            "body_bytes": services.body_bytes(),
        },
        "totals": {
            **services.counters.as_dict(),
            "dropped_log_lines": services.counters.dropped_log_lines + services.logger.dropped,
        },
    }


# hostd.invoke ----------------------------------------------------------------------------


class InvokeParams(msgspec.Struct, frozen=True, kw_only=True):
    session: str = ""
    plugin_id: str = ""
    method: str = ""
    params: dict[str, Any] | None = None
    stream: bool = False
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_TIMEOUT_S
    request_id: str = ""


def _target(ctx: CallContext, params: InvokeParams) -> Session:
    """The plugin session to call: by session id, else the one holding that plugin id."""
    session_id = params.session.strip()
    plugin_id = params.plugin_id.strip()
    if not session_id and not plugin_id:
        raise InvalidParams("decode hostd.invoke request: session or plugin_id is required")
    sessions = ctx.services.sessions
    if plugin_id in sessions.unavailable:  # restarting, or not yet registered again
        raise HostCallFailed("plugin disconnected", retryable=True, data_code="plugin_unavailable")
    found: Session | None
    if session_id:
        found = sessions.get(session_id)
        if found is not None and plugin_id and found.plugin_id != plugin_id:
            found = None
    else:
        found = sessions.by_plugin(plugin_id)
        if found is None:  # a session that never said hello is known by its session id
            found = next((s for s in sessions if s.plugin_id == plugin_id and s.kind == "plugin"), None)
    if found is None or found.kind != "plugin" or found.closing:
        raise HostCallFailed(f"no session for plugin {plugin_id or session_id}")
    return found


@host_method("hostd.invoke", InvokeParams, "hostd.invoke")
async def invoke(ctx: CallContext, params: InvokeParams) -> dict[str, Any]:
    method = params.method.strip()
    if not method:
        raise InvalidParams("decode hostd.invoke request: method is required")
    target = _target(ctx, params)
    services = ctx.services
    scope = services.scopes.open(target.id, params.request_id.strip() or None)
    link: EmitLink | None = None
    answered = False
    try:
        plugin_params = dict(params.params or {})
        invoker_stream_id = plugin_params.get("stream_id")
        scope.invoker_callback_id = plugin_params.get("host_callback_id")
        plugin_params["host_callback_id"] = scope.id
        if params.stream:
            link = services.emit.open(services, target, ctx.session, scope)
            plugin_params["stream_id"] = link.id
        services.logger.debug(
            "invoking plugin",
            method=method,
            plugin=target.plugin_id,
            session=target.id,
            request_id=scope.request_id,
            stream_id=link.id if link is not None else None,
        )
        try:
            raw = await target.peer.call(method, plugin_params, params.timeout_s)
        except TimeoutError:
            raise HostCallFailed("plugin call timed out") from None
        if method in REGISTRATION_METHODS:
            plain = dict(params.params or {})  # replayed after a restart under a fresh scope
            services.sessions.record_registration(target.plugin_id, method, plain, bytes(raw))
        answer: dict[str, Any] = {"result": await _result(link, bytes(raw))}
        if link is not None:
            answer["stream_id"] = link.id
            if isinstance(invoker_stream_id, str) and invoker_stream_id:
                answer["invoker_stream_id"] = invoker_stream_id
            link.started()
        answered = True
        return answer
    finally:
        if link is None:
            services.scopes.close(scope)
        elif not answered:
            link.abort("invoke failed")  # also closes the scope


async def _result(link: EmitLink | None, raw: bytes) -> Any:
    """The plugin's result as it sent it, unless it carries inline ``chunks`` for the stream."""
    if not raw:
        return None
    if link is None or b'"chunks"' not in raw:
        return fragment(raw)
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:  # pragma: no cover - the session decoded it as JSON already
        return fragment(raw)
    if not isinstance(decoded, dict) or not isinstance(decoded.get("chunks"), list) or not decoded["chunks"]:
        return fragment(raw)
    await link.replace(_inline_chunks(decoded.pop("chunks")))
    return decoded


def _inline_chunks(items: list[Any]) -> list[Chunk]:
    """``[{"Payload": b64, "Err": "msg"?}]`` as the native host's stream chunks carry them."""
    chunks = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise HostCallFailed(f"invalid inline chunks from plugin: chunk {i} is not an object")
        payload = item.get("Payload")
        error = item.get("Err")
        if payload is not None and not isinstance(payload, str):
            raise HostCallFailed(f"invalid inline chunks from plugin: chunk {i}: Payload is not a string")
        if error is not None and not isinstance(error, str):
            raise HostCallFailed(f"invalid inline chunks from plugin: chunk {i}: Err is not a string")
        try:
            data = base64.b64decode(payload or "", validate=True)
        except (binascii.Error, ValueError):
            raise HostCallFailed(f"invalid inline chunks from plugin: chunk {i}: Payload is not base64") from None
        chunks.append(Chunk(data, error or ""))
    return chunks


# hostd.stream.* --------------------------------------------------------------------------


class StreamParams(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str = ""


@host_method("hostd.stream.read", StreamParams, "hostd.stream.read")
async def stream_read(ctx: CallContext, params: StreamParams) -> dict[str, Any]:
    stream_id = params.stream_id
    if not stream_id:
        raise HostCallFailed("stream id is required")
    emit = ctx.services.emit
    link = emit.for_reader(ctx.session, stream_id)
    if link is None:
        return dict(ABORTED_READ) if emit.take_aborted(stream_id) else dict(DONE)
    return await link.read()


@host_method("hostd.stream.close", StreamParams, "hostd.stream.close", inline=True)
def stream_close(ctx: CallContext, params: StreamParams) -> dict[str, Any]:
    link = ctx.services.emit.for_reader(ctx.session, params.stream_id)
    if link is not None:
        link.abort()
        ctx.services.emit.remember_aborted(link.id)
    return {}


METHODS = (status, invoke, stream_read, stream_close)

__all__ = ["METHODS"]
