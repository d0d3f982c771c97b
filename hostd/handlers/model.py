"""``host.model.*``: model execution through the proxy's HTTP API, plain and streamed.

Both execute calls check, in the spec's order (CLIProxyAPI v8's): decode (done by the
session), the ``stream`` flag, ``proxy_url``, that a backend is configured, the entry protocol. A streamed answer is
relayed by a producer task (owned by the session, not by the call that opened it) into
the stream's bounded buffer; ``stream_read`` only waits on that buffer. Unlike HTTP
streams, an unknown or closed model stream id reads as ``done``.

A model stream opened under an open callback scope is closed when that scope ends; one
opened with a scope id that is not open is finished before the proxy is ever called.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import msgspec

from hostd.errors import HostCallFailed, HostError
from hostd.rpc.messages import EMPTY, b64
from hostd.rpc.methods import NOT_READY, CallContext, host_method
from hostd.scopes import Scope
from hostd.streams import BufferClosed, End, Stream, StreamTable

if TYPE_CHECKING:
    import httpx

    from hostd.upstream.model_backend import ModelBackend, ModelCall


class ModelParams(msgspec.Struct, frozen=True, kw_only=True):
    entry_protocol: str = ""
    exit_protocol: str = ""
    model: str = ""
    stream: bool | None = None
    body: bytes | None = None
    headers: dict[str, list[str]] | None = None
    query: dict[str, list[str]] | None = None
    alt: str = ""
    host_callback_id: str = ""
    forced_provider: str = ""
    auth_id: str = ""
    proxy_url: str = ""
    path: str = ""


class ModelStreamParams(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str = ""
    # Not a scope-checked method (§7): the key is accepted, under another attribute name.
    caller_callback_id: str = msgspec.field(default="", name="host_callback_id")


def _open_scope(ctx: CallContext) -> Scope | None:
    # The session looked the scope up before this call started; it may have ended since.
    scope = ctx.scope
    return scope if scope is not None and not scope.closed else None


def _prepare(ctx: CallContext, params: ModelParams, *, stream: bool) -> tuple[ModelBackend, ModelCall]:
    """The spec's checks after decode, in its order; the request to send."""
    # Lazy: keeps start-up cheap (httpx and the model backend load on the first host.model.* call).
    from hostd.upstream.model_backend import ModelCall, check_entry_protocol, check_proxy_url

    if stream and params.stream is not True:
        raise HostCallFailed("host.model.execute_stream requires stream=true")
    if not stream and params.stream:
        raise HostCallFailed("host.model.execute requires stream=false")
    proxy_url = check_proxy_url(params.proxy_url)  # before the executor check, as CLIProxyAPI v8 orders them
    backend: ModelBackend | None = ctx.services.model
    if backend is None:
        raise HostCallFailed("host model executor is unavailable")
    protocol = check_entry_protocol(params.entry_protocol)
    scope = _open_scope(ctx)
    call = ModelCall(
        entry_protocol=protocol,
        model=params.model,
        stream=stream,
        body=params.body or b"",
        headers=params.headers,
        query=params.query,
        plugin_id=ctx.plugin_id,
        session_id=ctx.session.id,
        callback_id=scope.id if scope is not None else "",
        exit_protocol=params.exit_protocol.strip(),
        alt=params.alt.strip(),
        auth_id=params.auth_id.strip(),
        forced_provider=params.forced_provider.strip(),
        proxy_url=proxy_url,
        path=params.path.strip(),
    )
    return backend, call


@host_method("host.model.execute", ModelParams, "host model execution")
async def model_execute(ctx: CallContext, params: ModelParams) -> dict[str, Any]:
    backend, call = _prepare(ctx, params, stream=False)
    result = await backend.execute(call)
    return {
        "status_code": result.status_code,
        "headers": result.headers or None,
        "body": result.body or None,
    }


@host_method("host.model.execute_stream", ModelParams, "host model execution stream")
async def model_execute_stream(ctx: CallContext, params: ModelParams) -> dict[str, Any]:
    backend, call = _prepare(ctx, params, stream=True)
    table = ctx.services.streams
    stream = table.open("model", ctx.session)
    scope = _open_scope(ctx)
    if scope is None and params.host_callback_id:
        # The scope is not open (never issued, or ended): finished before it started.
        stream.buffer.finish()
        return {"status_code": 0, "headers": None, "stream_id": stream.id}
    if scope is not None:
        _bind_to_scope(table, stream, scope)
    ready: asyncio.Future[httpx.Response | None] = asyncio.get_running_loop().create_future()
    table.start(stream, _produce(backend, call, stream, ready))
    try:
        response = await ready
    except BaseException:
        table.close(stream, "request failed")
        raise
    if response is None:
        # Closed (its scope ended) before the proxy answered: a stream that is already over.
        return {"status_code": 0, "headers": None, "stream_id": stream.id}
    from hostd.upstream.model_backend import response_headers  # lazy: loaded by _prepare already

    return {
        "status_code": response.status_code,
        "headers": response_headers(response.headers.raw) or None,
        "stream_id": stream.id,
    }


def _bind_to_scope(table: StreamTable, stream: Stream[bytes], scope: Scope) -> None:
    """Close ``stream`` when ``scope`` ends; forget the scope's callback if the stream ends first."""

    def scope_ended() -> None:
        table.close(stream, "callback scope ended")

    def stream_closed(_stream: Stream[bytes]) -> None:
        with contextlib.suppress(ValueError):  # already run: the scope ended first
            scope.on_close.remove(scope_ended)

    stream.scope_id = scope.id
    stream.on_close = stream_closed
    scope.on_close.append(scope_ended)


async def _produce(
    backend: ModelBackend,
    call: ModelCall,
    stream: Stream[bytes],
    ready: asyncio.Future[httpx.Response | None],
) -> None:
    """Send the request, hand the answer's head to the caller, then copy the body into the buffer.

    Runs in the session's task group, so it must never raise: every failure ends up either
    in ``ready`` (before the head) or as the stream's final error.
    """
    # Lazy: keeps start-up cheap (loaded already by _prepare, before this task starts).
    from hostd.upstream._net import NETWORK_ERRORS, close_response, upstream_aborter

    response: httpx.Response | None = None
    buffer = stream.buffer
    try:
        try:
            response = await backend.open_stream(call)
        except HostError as e:
            if not ready.done():
                ready.set_exception(e)
            return
        if ready.done():  # the caller is gone; closing the stream cancels us
            return
        stream.abort_upstream = upstream_aborter(response)
        ready.set_result(response)
        async with contextlib.aclosing(backend.pieces(response)) as pieces:
            async for piece in pieces:
                await buffer.put(piece)
        buffer.finish()
    except BufferClosed:
        pass
    except NETWORK_ERRORS as e:
        buffer.finish(f"model stream failed: {str(e) or type(e).__name__}")
    except Exception as e:  # a bug: end the stream, keep the session alive
        backend.logger.error("model stream producer failed", stream_id=stream.id, error=f"{type(e).__name__}: {e}")
        if not ready.done():
            ready.set_exception(HostCallFailed(f"model execution failed: {type(e).__name__}"))
        buffer.finish(f"model stream failed: {type(e).__name__}")
    finally:
        if not ready.done():
            ready.set_result(None)
        if response is not None:
            await close_response(response)


def _open_stream(ctx: CallContext, params: ModelStreamParams) -> Stream[bytes] | None:
    stream_id = params.stream_id  # compared exactly as sent (§3)
    if not stream_id:
        raise HostCallFailed("model stream id is required")
    return ctx.services.streams.get(stream_id, ctx.session, "model")


def _read_now(ctx: CallContext, params: ModelStreamParams) -> Any:
    """The read answered inline when a piece (or the end) is already there, or the id is unknown."""
    stream = _open_stream(ctx, params)
    if stream is None:
        return _GONE
    item = ctx.services.streams.read_nowait(stream)
    return NOT_READY if item is None else _read_answer(item)


@host_method("host.model.stream_read", ModelStreamParams, "host model stream read", fast=_read_now)
async def model_stream_read(ctx: CallContext, params: ModelStreamParams) -> dict[str, Any]:
    stream = _open_stream(ctx, params)
    if stream is None:
        return dict(_GONE)
    item = await ctx.services.streams.read(stream)
    return _read_answer(item)


_GONE: dict[str, Any] = {"payload": None, "error": "", "done": True}


def _read_answer(item: bytes | End) -> dict[str, Any]:
    if isinstance(item, End):
        return {"payload": None, "error": item.error, "done": True}
    return {"payload": b64(item), "error": "", "done": False}


@host_method("host.model.stream_close", ModelStreamParams, "host model stream close", inline=True)
def model_stream_close(ctx: CallContext, params: ModelStreamParams) -> dict[str, Any]:
    ctx.services.streams.close_id(params.stream_id, ctx.session, "model", "closed by plugin")
    return EMPTY


METHODS = (model_execute, model_execute_stream, model_stream_read, model_stream_close)
