"""``host.http.*``: outbound HTTP for plugins, plain (``do``) and streamed (``do_stream``).

Results use the native host's payloads: Go field names for ``do``, snake_case for streams.
Stream bodies are pulled by a producer task (owned by the session) into the stream's
bounded buffer; ``stream_read`` only ever waits on that buffer, never on httpx.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import anyio
import httpx
import msgspec

from hostd.errors import Forbidden, HostCallFailed
from hostd.handlers.base import CallContext, host_method
from hostd.rpc.messages import b64
from hostd.streams import BufferClosed, End, Stream
from hostd.upstream.egress import EgressDenied
from hostd.upstream.headers import header_map
from hostd.upstream.http_client import Sent
from hostd.upstream.netstream import upstream_aborter


class HttpRequestFields(msgspec.Struct, frozen=True, kw_only=True):
    method: str = ""
    url: str = ""
    headers: dict[str, list[str]] | None = None
    body: bytes | None = None


class HttpParams(msgspec.Struct, frozen=True, kw_only=True):
    method: str = ""
    url: str = ""
    headers: dict[str, list[str]] | None = None
    body: bytes | None = None
    request: HttpRequestFields | None = None
    host_callback_id: str = ""

    def fields(self) -> HttpRequestFields | HttpParams:
        return self.request if self.request is not None else self


class StreamParams(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str = ""
    host_callback_id: str = ""


async def _send(ctx: CallContext, params: HttpParams) -> Sent:
    fields = params.fields()
    upstream = ctx.services.http
    try:
        request, added_gzip = upstream.build(fields.method or "GET", fields.url, fields.headers, fields.body)
    except (httpx.InvalidURL, ValueError, TypeError) as e:
        raise HostCallFailed(f"create host http request: {e}") from None
    try:
        return await upstream.send(request, added_gzip, session=ctx.session.id, plugin=ctx.plugin_id)
    except EgressDenied as e:
        raise Forbidden(str(e)) from None
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        raise HostCallFailed(f"execute host http request: {_describe(e)}") from None


def _describe(e: BaseException) -> str:
    text = str(e)
    return text if text else type(e).__name__


@host_method("host.http.do", HttpParams, "host http")
async def http_do(ctx: CallContext, params: HttpParams) -> dict[str, Any]:
    timeout = ctx.services.config.http.timeout_s
    try:
        async with asyncio.timeout(timeout):
            sent = await _send(ctx, params)
            try:
                body = await ctx.services.http.read_body(sent)
            except (httpx.HTTPError, zlib.error) as e:
                raise HostCallFailed(f"read host http response: {_describe(e)}") from None
            finally:
                await sent.response.aclose()
    except TimeoutError:
        raise HostCallFailed(f"execute host http request: timeout after {timeout:g}s") from None
    headers = header_map(sent.response.headers.raw, sent.dropped_headers)
    return {"StatusCode": sent.response.status_code, "Headers": headers or None, "Body": body}


@host_method("host.http.do_stream", HttpParams, "host http")
async def http_do_stream(ctx: CallContext, params: HttpParams) -> dict[str, Any]:
    table = ctx.services.streams
    stream = table.open("http", ctx.session)
    timeout = ctx.services.config.http.timeout_s
    try:
        async with asyncio.timeout(timeout):  # for the headers; the body has the idle reaper
            sent = await _send(ctx, params)
    except TimeoutError:
        table.close(stream, "request failed")
        raise HostCallFailed(f"execute host http request: timeout after {timeout:g}s") from None
    except BaseException:
        table.close(stream, "request failed")
        raise
    stream.abort_upstream = upstream_aborter(sent.response)
    table.start(stream, _pump(ctx, stream, sent))
    result: dict[str, Any] = {"status_code": sent.response.status_code}
    headers = header_map(sent.response.headers.raw, sent.dropped_headers)
    if headers:
        result["headers"] = headers
    result["stream_id"] = stream.id
    return result


async def _pump(ctx: CallContext, stream: Stream[bytes], sent: Sent) -> None:
    """Copy the body into the stream's buffer; waits while the buffer is full."""
    buffer = stream.buffer
    try:
        async for piece in ctx.services.http.pieces(sent):
            await buffer.put(piece)
        buffer.finish()
    except BufferClosed:
        pass
    except (httpx.HTTPError, zlib.error) as e:
        buffer.finish(_describe(e) or "stream failed")
    finally:
        with anyio.CancelScope(shield=True):
            await sent.response.aclose()


def _stream_id(params: StreamParams) -> str:
    stream_id = params.stream_id.strip()
    if not stream_id:
        raise HostCallFailed("http stream id is required")
    return stream_id


@host_method("host.http.stream_read", StreamParams, "host http stream read")
async def http_stream_read(ctx: CallContext, params: StreamParams) -> dict[str, Any]:
    stream_id = _stream_id(params)
    table = ctx.services.streams
    stream = table.get(stream_id, ctx.session, "http")
    if stream is None:
        raise HostCallFailed(f"http stream {stream_id} is not open")
    item = await table.read(stream)
    if isinstance(item, End):
        if item.aborted:
            raise HostCallFailed(f"http stream {stream_id} is not open")
        if item.error:
            return {"error": item.error, "done": True}
        return {"done": True}
    return {"payload": b64(item)}


@host_method("host.http.stream_close", StreamParams, "host http stream close", inline=True)
def http_stream_close(ctx: CallContext, params: StreamParams) -> dict[str, Any]:
    ctx.services.streams.close_id(params.stream_id, ctx.session, "http", "closed by plugin")
    return {}


METHODS = (http_do, http_do_stream, http_stream_read, http_stream_close)
