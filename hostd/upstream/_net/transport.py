"""httpx's transport interface over sharded httpcore pools on hostd's network backend.

One transport serves both clients (``host.http.*`` and the model backend); only the network
backend (egress-checked or not) and the upstream proxy differ. It builds the httpcore pools
itself, through httpcore's public API, instead of patching the private pool of
``httpx.AsyncHTTPTransport``.

httpcore's pool walks every connection it holds on each request and each response close.
With 10,000 streams open through one pool that is quadratic: opening them took minutes and
closing them seconds. Requests are therefore spread over many small pools (``shard_size``
requests in flight each), filled in order, so a quiet daemon uses the first pool only and
keeps its keep-alive connections together.

Exceptions are not translated here: httpcore's and httpx's reach the client, which maps
them to hostd's errors in one function per upstream. That also keeps the body iterator
bare (no context manager per piece).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpcore
import httpx

SHARD_SIZE = 32
KEEPALIVE_PER_SHARD = 8
KEEPALIVE_EXPIRY_S = 5.0


class _Shard:
    __slots__ = ("active", "pool")

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
        self.pool = pool
        self.active = 0


class _Body(httpx.AsyncByteStream):
    """The response body; closing it frees the request's place in its shard."""

    __slots__ = ("_inner", "_shard")

    def __init__(self, inner: Any, shard: _Shard) -> None:
        self._inner = inner
        self._shard: _Shard | None = shard

    def __aiter__(self) -> AsyncIterator[bytes]:
        iterator: AsyncIterator[bytes] = self._inner.__aiter__()  # httpcore's own: no frame of ours per piece
        return iterator

    async def aclose(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            shard.active -= 1
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()


class PooledTransport(httpx.AsyncBaseTransport):
    """Sharded HTTP/1.1 pools. ``check`` sees each request's host first (the proxy path's policy)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        network_backend: httpcore.AsyncNetworkBackend,
        proxy: httpx.Proxy | None = None,
        check: Callable[[str], None] | None = None,
        shard_size: int = SHARD_SIZE,
    ) -> None:
        self._ssl_context = ssl_context
        self._backend = network_backend
        self._proxy = proxy
        self._check = check
        self._shard_size = shard_size
        self._shards: list[_Shard] = []

    @property
    def shards(self) -> int:
        return len(self._shards)

    def _new_pool(self) -> httpcore.AsyncConnectionPool:
        proxy = self._proxy
        if proxy is None:
            return httpcore.AsyncConnectionPool(
                ssl_context=self._ssl_context,
                max_connections=None,  # the shard's size bounds it; httpcore's default is 10
                max_keepalive_connections=KEEPALIVE_PER_SHARD,
                keepalive_expiry=KEEPALIVE_EXPIRY_S,
                network_backend=self._backend,
            )
        return httpcore.AsyncHTTPProxy(
            proxy_url=httpcore.URL(
                scheme=proxy.url.raw_scheme, host=proxy.url.raw_host, port=proxy.url.port, target=proxy.url.raw_path
            ),
            proxy_auth=proxy.raw_auth,
            proxy_headers=proxy.headers.raw,
            proxy_ssl_context=proxy.ssl_context,
            ssl_context=self._ssl_context,
            max_connections=None,
            max_keepalive_connections=KEEPALIVE_PER_SHARD,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
            network_backend=self._backend,
        )

    def _pick(self) -> _Shard:
        for shard in self._shards:
            if shard.active < self._shard_size:
                return shard
        shard = _Shard(self._new_pool())
        self._shards.append(shard)
        return shard

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if self._check is not None:
            self._check(url.raw_host.decode("ascii"))
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        shard = self._pick()
        shard.active += 1
        try:
            response = await shard.pool.handle_async_request(core)
        except BaseException:
            shard.active -= 1
            raise
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, shard),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.pool.aclose()


def give_back(pool: Any, origin: Any, keepalive_expiry: float | None, stream: httpcore.AsyncNetworkStream) -> bool:
    """Put ``stream``, an HTTP/1.1 connection whose last body hostd read itself (``h1body.py``),
    back in ``pool`` as an idle keep-alive connection, as httpcore would have at the body's
    end; False (the caller closes it) when ``pool`` is a proxy's or keeps enough idle ones."""
    from httpcore._async.http11 import HTTPConnectionState

    if type(pool) is not httpcore.AsyncConnectionPool:
        return False  # a proxy's pool builds connections of other kinds
    with pool._optional_thread_lock:
        if sum(1 for c in pool._connections if c.is_idle()) >= pool._max_keepalive_connections:
            return False
        inner = httpcore.AsyncHTTP11Connection(origin, stream, keepalive_expiry)
        inner._state = HTTPConnectionState.IDLE
        if keepalive_expiry is not None:
            inner._expire_at = time.monotonic() + keepalive_expiry
        outer = httpcore.AsyncHTTPConnection(
            origin,
            ssl_context=pool._ssl_context,
            keepalive_expiry=keepalive_expiry,
            network_backend=pool._network_backend,
        )
        outer._connection = inner
        pool._connections.append(outer)
    return True
