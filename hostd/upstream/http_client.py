"""The shared outbound HTTP client: one pooled ``httpx.AsyncClient`` behind the egress policy.

Requests are built as ``httpx.Request`` objects directly, so only the plugin's headers go
out (plus ``Accept-Encoding: gzip`` and a User-Agent when the plugin set none, as Go's
client does). Bodies are read raw and gzip is decoded here, only when hostd asked for it.
"""

from __future__ import annotations

import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpcore
import httpx

from hostd import __version__
from hostd.config import HttpConfig
from hostd.errors import LimitExceeded
from hostd.logs import Logger, is_secret_key
from hostd.upstream.egress import EgressBackend, EgressPolicy
from hostd.upstream.headers import PIECE_BYTES, Gunzip, has_header, header_list, is_token
from hostd.upstream.pool import ShardedTransport

USER_AGENT = f"hostd/{__version__}"
MAX_REDIRECTS = 10
SHARD_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=8, keepalive_expiry=5.0)
GZIP_DROPPED = frozenset({"Content-Encoding", "Content-Length"})


@dataclass(slots=True)
class Sent:
    """A response whose headers have arrived; the body is read with :meth:`HttpUpstream.pieces`."""

    response: httpx.Response
    gunzip: bool

    @property
    def dropped_headers(self) -> frozenset[str]:
        return GZIP_DROPPED if self.gunzip else frozenset()


class HttpUpstream:
    def __init__(self, config: HttpConfig, logger: Logger) -> None:
        self.config = config
        self.logger = logger
        self.policy = EgressPolicy(config.deny_private)
        self.buffered_bytes = 0  # across all sessions, for max_total_body_bytes
        timeout = httpx.Timeout(connect=config.connect_timeout_s, read=None, write=config.timeout_s, pool=None)
        backend = EgressBackend(self.policy)
        # One context for all shards: loading CAs costs ~10 ms each time.
        ca_file = config.ca_file
        ssl_context = ssl.create_default_context(cafile=ca_file) if ca_file else httpx.create_ssl_context()

        def shard() -> httpx.AsyncBaseTransport:
            transport = httpx.AsyncHTTPTransport(proxy=config.proxy or None, limits=SHARD_LIMITS, verify=ssl_context)
            if not config.proxy:
                # Resolve, check and connect to the checked address for every connection.
                transport._pool = httpcore.AsyncConnectionPool(
                    ssl_context=ssl_context,
                    max_connections=None,  # the shard's size bounds it; httpcore's default is 10
                    max_keepalive_connections=SHARD_LIMITS.max_keepalive_connections,
                    keepalive_expiry=SHARD_LIMITS.keepalive_expiry,
                    network_backend=backend,
                )
            return transport

        transport = ShardedTransport(shard)
        hooks = {"request": [self._check_proxied]} if config.proxy else {}
        self.client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            trust_env=False,
            event_hooks=hooks,
        )

    async def _check_proxied(self, request: httpx.Request) -> None:
        self.policy.check_literal(request.url.host)

    async def aclose(self) -> None:
        await self.client.aclose()

    def build(
        self, method: str, url: str, headers: dict[str, list[str]] | None, body: bytes | None
    ) -> tuple[httpx.Request, bool]:
        """The request to send, and whether hostd added ``Accept-Encoding: gzip``."""
        if not is_token(method):
            raise ValueError(f"net/http: invalid method {method!r}")
        pairs = header_list(headers)
        add_gzip = not has_header(pairs, "accept-encoding")
        if add_gzip:
            pairs.append(("Accept-Encoding", "gzip"))
        if not has_header(pairs, "user-agent"):
            pairs.append(("User-Agent", USER_AGENT))
        request = httpx.Request(method, url, headers=pairs, content=body or b"")
        if not body and method in ("GET", "HEAD", "OPTIONS", "DELETE") and request.headers.get("content-length") == "0":
            del request.headers["Content-Length"]
        return request, add_gzip

    async def send(self, request: httpx.Request, added_gzip: bool, *, session: str, plugin: str) -> Sent:
        """Send and return once the response headers arrive."""
        started = time.monotonic()
        response = await self.client.send(request, stream=True)
        if self.logger.enabled(10):
            self.logger.debug(
                "http request",
                method=request.method,
                url=redact_url(str(request.url)),
                status=response.status_code,
                ms=round((time.monotonic() - started) * 1000, 1),
                session=session,
                plugin=plugin,
            )
        gz = added_gzip and response.headers.get("content-encoding", "").strip().lower() == "gzip"
        return Sent(response, gz)

    async def pieces(self, sent: Sent) -> AsyncIterator[bytes]:
        """The body as it arrives, decoded when hostd asked for gzip, in pieces of at most 32 KiB."""
        gunzip = Gunzip() if sent.gunzip else None
        async for raw in sent.response.aiter_raw():
            if gunzip is not None:
                for piece in gunzip.feed(raw):
                    yield piece
            elif len(raw) <= PIECE_BYTES:
                yield raw
            else:
                view = memoryview(raw)
                for i in range(0, len(raw), PIECE_BYTES):
                    yield bytes(view[i : i + PIECE_BYTES])
        if gunzip is not None:
            gunzip.finish()

    async def read_body(self, sent: Sent) -> bytes:
        """The whole body, within ``max_body_bytes`` and the daemon-wide ``max_total_body_bytes``."""
        parts: list[bytes] = []
        size = 0
        limit = self.config.max_body_bytes
        try:
            async for piece in self.pieces(sent):
                size += len(piece)
                self.buffered_bytes += len(piece)
                if size > limit:
                    raise LimitExceeded(f"response body exceeds max_body_bytes ({limit} bytes)")
                total = self.config.max_total_body_bytes
                if self.buffered_bytes > total:
                    raise LimitExceeded(f"buffered response bodies exceed max_total_body_bytes ({total} bytes)")
                parts.append(piece)
        finally:
            self.buffered_bytes -= size
        return b"".join(parts)


def redact_url(url: str) -> str:
    """The URL with userinfo and secret-looking query values replaced, for logs."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(is_secret_key(k) or k.lower() == "key" for k, _ in pairs):
            query = urllib.parse.urlencode(
                [(k, "[redacted]" if is_secret_key(k) or k.lower() == "key" else v) for k, v in pairs]
            )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
