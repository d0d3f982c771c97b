"""``host.http.*``: outbound HTTP for plugins, plain (``do``) and streamed (``do_stream``),
and the operations that cancel them (``operation_open``, ``cancel``; PROTOCOL.md §5, §13).

Results use the native host's payloads: Go field names for ``do``, snake_case for streams.
Stream bodies are pulled by a producer task (owned by the session) into the stream's
bounded buffer; ``stream_read`` only ever waits on that buffer, never on httpx.

A call that claims an operation can be cancelled from another call: while it waits for the
headers it fails ``execute host http request: context canceled``, while ``do`` reads the
body ``read host http response: context canceled``; a stream it opened is closed at once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from hostd.errors import HostCallFailed
from hostd.operations import CANCELED, Operation, cancel_task
from hostd.rpc.messages import EMPTY, b64
from hostd.rpc.methods import NOT_READY, CallContext, Held, host_method
from hostd.streams import BufferClosed, End, PieceBuffer, Stream, StreamTable
from hostd.upstream.headers import header_map

if TYPE_CHECKING:
    from hostd.upstream._net import H1Body
    from hostd.upstream.http_client import Sent

EXECUTE = "execute host http request"
READ = "read host http response"


class WireProfile(msgspec.Struct, frozen=True, kw_only=True):
    http1_only: bool = False  # HTTP/1.1 is all hostd speaks
    disable_auto_compression: bool = False
    header_profile: list[str | None] | None = None


class HttpRequestFields(msgspec.Struct, frozen=True, kw_only=True):
    method: str = ""
    url: str = ""
    headers: dict[str, list[str]] | None = None
    body: bytes | None = None
    wire_profile: WireProfile | None = None


class HttpParams(msgspec.Struct, frozen=True, kw_only=True):
    method: str = ""
    url: str = ""
    headers: dict[str, list[str]] | None = None
    body: bytes | None = None
    request: HttpRequestFields | None = None
    wire_profile: WireProfile | None = None
    host_callback_id: str = ""
    operation_id: str = ""

    def fields(self) -> HttpRequestFields | HttpParams:
        return self.request if self.request is not None else self

    def profile(self) -> WireProfile | None:
        """A non-null ``request.wire_profile`` wins over the top-level one."""
        if self.request is not None and self.request.wire_profile is not None:
            return self.request.wire_profile
        return self.wire_profile


class StreamParams(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str = ""
    # Not a scope-checked method (§7): the key is accepted, under another attribute name.
    caller_callback_id: str = msgspec.field(default="", name="host_callback_id")


class OperationOpenParams(msgspec.Struct, frozen=True, kw_only=True):
    host_callback_id: str = ""


class CancelParams(msgspec.Struct, frozen=True, kw_only=True):
    operation_id: str = ""
    # Only identifies the caller and is never checked (§7): under another attribute name,
    # so the session does not look it up as a scope.
    caller_callback_id: str = msgspec.field(default="", name="host_callback_id")


def _claim_or_check_scope(ctx: CallContext, params: HttpParams) -> Operation | None:
    """The claimed operation, or ``None``; without one, a scope id must name an open scope."""
    operation_id = params.operation_id.strip()
    if operation_id:
        return ctx.services.operations.claim(operation_id, ctx.session.id, params.host_callback_id)
    if params.host_callback_id and (ctx.scope is None or ctx.scope.closed):
        raise HostCallFailed("host callback ID is not open")  # CLIProxyAPI v8: before any request is sent
    return None


async def _send(ctx: CallContext, params: HttpParams) -> Sent:
    # Lazy: keeps start-up cheap (httpx, httpcore and TLS load on the first host.http.* call).
    from hostd.upstream._net import EgressDenied
    from hostd.upstream.http_client import BUILD_ERRORS, SEND_ERRORS, describe, translate

    fields = params.fields()
    profile = params.profile()
    upstream = ctx.services.http
    try:
        request, added_gzip = upstream.build(
            fields.method or "GET",
            fields.url,
            fields.headers,
            fields.body,
            auto_compression=profile is None or not profile.disable_auto_compression,
            header_profile=[h for h in profile.header_profile if h] if profile and profile.header_profile else None,
        )
    except EgressDenied as e:
        raise translate(e, EXECUTE) from None
    except BUILD_ERRORS as e:
        raise HostCallFailed(f"create host http request: {describe(e)}") from None
    try:
        return await upstream.send(request, added_gzip, session=ctx.session.id, plugin=ctx.plugin_id)
    except SEND_ERRORS as e:
        raise translate(e, EXECUTE) from None


def _cancelled_by(op: Operation | None, task: asyncio.Task[Any]) -> bool:
    """Whether the cancellation being handled is the operation's own (and only that one)."""
    return op is not None and op.cancelled and task.uncancel() == 0


@host_method("host.http.do", HttpParams, "host http")
async def http_do(ctx: CallContext, params: HttpParams) -> Held:
    # The body stays counted in [http] max_total_body_bytes until its answer is written.
    release: list[Callable[[], None]] = []  # set once the body is read
    try:
        result = await _do(ctx, params, release)
    except BaseException:
        for done in release:
            done()
        raise
    return Held(result, release[0])


async def _do(ctx: CallContext, params: HttpParams, release: list[Callable[[], None]]) -> dict[str, Any]:
    # Lazy: keeps start-up cheap (httpx, httpcore and TLS load on the first host.http.* call).
    from hostd.upstream._net import NETWORK_ERRORS, close_response
    from hostd.upstream.http_client import translate

    op = _claim_or_check_scope(ctx, params)
    task = asyncio.current_task()
    assert task is not None
    timeout = ctx.services.config.http.timeout_s
    action = EXECUTE
    try:
        if op is not None:
            op.on_cancel = cancel_task(task)
        async with asyncio.timeout(timeout):
            sent = await _send(ctx, params)
            action = READ
            upstream = ctx.services.http
            try:
                body = await upstream.read_body(sent)
                release.append(functools.partial(upstream.budget.release, len(body)))
            except NETWORK_ERRORS as e:
                raise translate(e, READ) from None
            finally:
                await close_response(sent.response)
    except TimeoutError:
        raise HostCallFailed(f"{EXECUTE}: timeout after {timeout:g}s") from None
    except asyncio.CancelledError:
        if _cancelled_by(op, task):
            raise HostCallFailed(f"{action}: {CANCELED}") from None
        raise
    finally:
        if op is not None:
            ctx.services.operations.finish(op)
    headers = header_map(sent.response.headers.raw, sent.dropped_headers)
    return {"StatusCode": sent.response.status_code, "Headers": headers or None, "Body": body}


@host_method("host.http.do_stream", HttpParams, "host http")
async def http_do_stream(ctx: CallContext, params: HttpParams) -> dict[str, Any]:
    # Lazy: keeps start-up cheap (httpx, httpcore and TLS load on the first host.http.* call).
    from hostd.upstream._net import take_over, upstream_aborter

    op = _claim_or_check_scope(ctx, params)
    task = asyncio.current_task()
    assert task is not None
    table = ctx.services.streams
    try:
        stream = table.open("http", ctx.session)
    except BaseException:
        if op is not None:
            ctx.services.operations.finish(op)
        raise
    timeout = ctx.services.config.http.timeout_s
    try:
        if op is not None:
            op.on_cancel = cancel_task(task)
        async with asyncio.timeout(timeout):  # for the headers; the body has the idle reaper
            sent = await _send(ctx, params)
    except BaseException as e:
        table.close(stream, "request failed")
        if op is not None:
            ctx.services.operations.finish(op)
        if isinstance(e, TimeoutError):
            raise HostCallFailed(f"{EXECUTE}: timeout after {timeout:g}s") from None
        if isinstance(e, asyncio.CancelledError) and _cancelled_by(op, task):
            raise HostCallFailed(f"{EXECUTE}: {CANCELED}") from None
        raise
    result: dict[str, Any] = {"status_code": sent.response.status_code}
    headers = header_map(sent.response.headers.raw, sent.dropped_headers)
    if headers:
        result["headers"] = headers
    result["stream_id"] = stream.id
    # The body on hostd's own reader when the connection allows it (httpx is then done with
    # the response: nothing of it stays with the stream), else through httpx.
    body = take_over(sent.response, sent.gunzip)
    if body is not None:
        stream.abort_upstream = body.abort
    else:
        stream.abort_upstream = upstream_aborter(sent.response)
    if op is not None:
        _bind_operation(ctx, op, table, stream)
    table.start(stream, _pump(stream, _HttpxBody(ctx, sent) if body is None else body))
    return result


def _bind_operation(ctx: CallContext, op: Operation, table: StreamTable, stream: Stream[bytes]) -> None:
    """From now on the operation lives as long as the stream, and cancelling it closes the stream."""
    operations = ctx.services.operations

    def cancel() -> None:
        stream.info["cancelled"] = True  # a read already waiting answers "context canceled"
        table.close(stream, "operation cancelled")

    op.on_cancel = cancel
    stream.on_close = lambda _stream: operations.finish(op)


class _HttpxBody:
    """A body read through httpx (what hostd's own reader does not take): ``pump`` and ``close``
    as :class:`~hostd.upstream._net.H1Body` has them."""

    __slots__ = ("_ctx", "_sent")

    def __init__(self, ctx: CallContext, sent: Sent) -> None:
        self._ctx = ctx
        self._sent = sent

    async def pump(self, buffer: PieceBuffer[bytes]) -> None:
        async for piece in self._ctx.services.http.pieces(self._sent):
            await buffer.put(piece)

    async def aclose(self) -> None:
        # Lazy: keeps start-up cheap (loaded already by the call that opened the stream).
        from hostd.upstream._net import close_response

        await close_response(self._sent.response)


async def _pump(stream: Stream[bytes], body: H1Body | _HttpxBody) -> None:
    """Copy the body into the stream's buffer; waits while the buffer is full."""
    # Lazy: keeps start-up cheap (loaded already by the call that opened the stream).
    from hostd.upstream._net import NETWORK_ERRORS
    from hostd.upstream.http_client import describe

    buffer = stream.buffer
    try:
        await body.pump(buffer)
        buffer.finish()
    except BufferClosed:
        pass
    except NETWORK_ERRORS as e:
        buffer.finish(describe(e) or "stream failed")
    finally:
        await body.aclose()


def _stream_id(params: StreamParams) -> str:
    stream_id = params.stream_id  # compared exactly as sent (§3)
    if not stream_id:
        raise HostCallFailed("http stream id is required")
    return stream_id


def _open_stream(ctx: CallContext, params: StreamParams) -> Stream[bytes]:
    stream_id = _stream_id(params)
    stream = ctx.services.streams.get(stream_id, ctx.session, "http")
    if stream is None:
        raise HostCallFailed(f"http stream {stream_id} is not open")
    return stream


def _read_now(ctx: CallContext, params: StreamParams) -> Any:
    """The read answered inline when a piece (or the end) is already there."""
    stream = _open_stream(ctx, params)
    item = ctx.services.streams.read_nowait(stream)
    return NOT_READY if item is None else _read_answer(stream, item)


@host_method("host.http.stream_read", StreamParams, "host http stream read", fast=_read_now)
async def http_stream_read(ctx: CallContext, params: StreamParams) -> dict[str, Any]:
    stream = _open_stream(ctx, params)
    item = await ctx.services.streams.read(stream)
    return _read_answer(stream, item)


def _read_answer(stream: Stream[bytes], item: bytes | End) -> dict[str, Any]:
    stream_id = stream.id
    if isinstance(item, End):
        if item.aborted:
            if stream.info.get("cancelled"):
                return {"error": CANCELED, "done": True}
            raise HostCallFailed(f"http stream {stream_id} is not open")
        if item.error:
            return {"error": item.error, "done": True}
        return {"done": True}
    return {"payload": b64(item)}


@host_method("host.http.stream_close", StreamParams, "host http stream close", inline=True)
def http_stream_close(ctx: CallContext, params: StreamParams) -> dict[str, Any]:
    ctx.services.streams.close_id(params.stream_id, ctx.session, "http", "closed by plugin")
    return EMPTY


@host_method("host.http.operation_open", OperationOpenParams, "host http operation open", inline=True)
def http_operation_open(ctx: CallContext, params: OperationOpenParams) -> dict[str, Any]:
    scope = ctx.scope
    if params.host_callback_id and (scope is None or scope.closed):
        raise HostCallFailed("host callback ID is not open")
    op = ctx.services.operations.open(
        ctx.session.id, params.host_callback_id, scope, limit=ctx.services.config.limits.max_streams
    )
    return {"operation_id": op.id}


@host_method("host.http.cancel", CancelParams, "host http cancel", inline=True)
def http_cancel(ctx: CallContext, params: CancelParams) -> dict[str, Any]:
    operation_id = params.operation_id.strip()
    if not operation_id:
        raise HostCallFailed("host http operation id is required")
    ctx.services.operations.cancel(operation_id, ctx.session.id)
    return EMPTY


METHODS = (
    http_do,
    http_do_stream,
    http_stream_read,
    http_stream_close,
    http_operation_open,
    http_cancel,
)
