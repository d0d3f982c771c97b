"""Connection pooling that stays linear with thousands of open streams.

httpcore's pool walks every connection it holds on each request and each response close.
With 10,000 streams open through one pool that is quadratic: opening them took minutes and
closing them seconds. :class:`ShardedTransport` spreads requests over many small pools
(``shard_size`` requests in flight each) and fills them in order, so a quiet daemon uses the
first pool only and keeps its keep-alive connections together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx

SHARD_SIZE = 32


class _Shard:
    __slots__ = ("active", "transport")

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport
        self.active = 0


class _CountedStream(httpx.AsyncByteStream):
    """The response body; closing it frees the request's place in its shard."""

    __slots__ = ("_inner", "_shard")

    def __init__(self, inner: httpx.AsyncByteStream, shard: _Shard) -> None:
        self._inner = inner
        self._shard: _Shard | None = shard

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._inner.__aiter__()  # the inner iterator itself: no generator frame per open stream

    async def aclose(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            shard.active -= 1
        await self._inner.aclose()


class ShardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, make_shard: Callable[[], httpx.AsyncBaseTransport], shard_size: int = SHARD_SIZE) -> None:
        self._make_shard = make_shard
        self._shard_size = shard_size
        self._shards: list[_Shard] = []

    @property
    def shards(self) -> int:
        return len(self._shards)

    def _pick(self) -> _Shard:
        for shard in self._shards:
            if shard.active < self._shard_size:
                return shard
        shard = _Shard(self._make_shard())
        self._shards.append(shard)
        return shard

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = self._pick()
        shard.active += 1
        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            shard.active -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers.raw,
            stream=_CountedStream(response.stream, shard),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.transport.aclose()
