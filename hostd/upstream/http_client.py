"""The shared outbound HTTP client for ``host.http.*``: pooled, behind the egress policy.

Requests are built as ``httpx.Request`` objects directly, so only the plugin's headers go
out (plus ``Accept-Encoding: gzip`` and a User-Agent when the plugin set none, as Go's
client does), in the order and casing a ``wire_profile`` asks for. Bodies are read raw and
gzip is decoded here, only when hostd asked for it. :func:`translate` is the one place
where the network stack's exceptions become ``host.http.*`` errors.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from hostd.config import HttpConfig
from hostd.errors import Forbidden, HostCallFailed, HostError, LimitExceeded
from hostd.logs import Logger, is_secret_key
from hostd.upstream._net import (
    NETWORK_ERRORS,
    USER_AGENT,
    AsyncioBackend,
    BodyBudget,
    EgressBackend,
    EgressDenied,
    EgressPolicy,
    Gunzip,
    PooledTransport,
    client_ssl_context,
    pieces,
    read_bounded,
)
from hostd.upstream._net.egress import parse_inet_aton
from hostd.upstream.headers import has_header, header_list, is_token

MAX_REDIRECTS = 10
# Go's client moves Transfer-Encoding out of Response.Header; gzip it decoded drops these too.
DROPPED = frozenset({"Transfer-Encoding"})
GZIP_DROPPED = DROPPED | {"Content-Encoding", "Content-Length"}
# What building a request and sending it may raise for bad input or a failed exchange (not for a bug).
BUILD_ERRORS: tuple[type[Exception], ...] = (*NETWORK_ERRORS, ValueError, TypeError)
SEND_ERRORS: tuple[type[Exception], ...] = (*NETWORK_ERRORS, EgressDenied)


@dataclass(slots=True)
class Sent:
    """A response whose headers have arrived; the body is read with :meth:`HttpUpstream.pieces`."""

    response: httpx.Response
    gunzip: bool

    @property
    def dropped_headers(self) -> frozenset[str]:
        return GZIP_DROPPED if self.gunzip else DROPPED


def translate(e: BaseException, action: str) -> HostError:
    """The ``host.http.*`` error for an exception of the network stack.

    ``action`` is the Go text's prefix: ``execute host http request`` while sending and
    waiting for the headers, ``read host http response`` while reading the body.
    """
    if isinstance(e, HostError):
        return e
    if isinstance(e, EgressDenied):
        return Forbidden(str(e))
    return HostCallFailed(f"{action}: {describe(e)}")


def describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


class HttpUpstream:
    def __init__(self, config: HttpConfig, logger: Logger) -> None:
        self.config = config
        self.logger = logger
        self.policy = EgressPolicy(config.deny_private, config.allow_hosts, config.deny_hosts)
        total = config.max_total_body_bytes
        self.budget = BodyBudget(
            total, lambda: LimitExceeded(f"buffered response bodies exceed max_total_body_bytes ({total} bytes)")
        )
        timeout = httpx.Timeout(connect=config.connect_timeout_s, read=None, write=config.timeout_s, pool=None)
        # One context for all shards; its CAs (~28 ms to load) on the first TLS handshake.
        ssl_context = client_ssl_context(config.ca_file or None)
        if config.proxy:
            # hostd does not resolve through a proxy: the host is checked as the proxy will read it.
            transport = PooledTransport(
                ssl_context=ssl_context,
                network_backend=AsyncioBackend(),
                proxy=httpx.Proxy(config.proxy),
                check=self.policy.check_proxied,
            )
        else:
            # Resolve, check and connect to the checked address for every connection.
            transport = PooledTransport(ssl_context=ssl_context, network_backend=EgressBackend(self.policy))
        self.client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            trust_env=False,
        )

    @property
    def buffered_bytes(self) -> int:
        return self.budget.buffered

    async def aclose(self) -> None:
        await self.client.aclose()

    def build(
        self,
        method: str,
        url: str,
        headers: dict[str, list[str]] | None,
        body: bytes | None,
        *,
        auto_compression: bool = True,
        header_profile: list[str] | None = None,
    ) -> tuple[httpx.Request, bool]:
        """The request to send, and whether hostd added ``Accept-Encoding: gzip``."""
        if not is_token(method):
            raise ValueError(f"net/http: invalid method {method!r}")
        self._check_spelling(url)
        pairs = header_list(headers)
        # As Go's transport decides: not for HEAD, not for a Range request.
        add_gzip = (
            auto_compression
            and method != "HEAD"
            and not has_header(pairs, "accept-encoding")
            and not has_header(pairs, "range")
        )
        if add_gzip:
            pairs.append(("Accept-Encoding", "gzip"))
        if not has_header(pairs, "user-agent"):
            pairs.append(("User-Agent", USER_AGENT))
        request = httpx.Request(method, url, headers=pairs, content=body or b"")
        if not body and method in ("GET", "HEAD", "OPTIONS", "DELETE") and request.headers.get("content-length") == "0":
            del request.headers["Content-Length"]
        if header_profile:
            request.headers = httpx.Headers(profiled(request.headers.raw, header_profile))
        return request, add_gzip

    def _check_spelling(self, url: str) -> None:
        """An IPv4 spelling httpx refuses to parse (``0251.0376.0251.0376``) but a resolver or
        proxy would read as an address: refused as that address (-32002), not as a bad URL."""
        try:
            host = urllib.parse.urlsplit(url).hostname
        except ValueError:
            return
        address = parse_inet_aton(host) if host else None
        if host and address is not None:
            self.policy.check(host, address)

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

    def pieces(self, sent: Sent) -> AsyncIterator[bytes]:
        """The body as it arrives, decoded when hostd asked for gzip, in pieces of at most 32 KiB."""
        return pieces(sent.response, Gunzip() if sent.gunzip else None)

    async def read_body(self, sent: Sent) -> bytes:
        """The whole body, within ``max_body_bytes`` and the daemon-wide ``max_total_body_bytes``
        (where it stays counted until ``self.budget.release(len(body))``)."""
        limit = self.config.max_body_bytes
        return await read_bounded(
            self.pieces(sent),
            limit,
            lambda: LimitExceeded(f"response body exceeds max_body_bytes ({limit} bytes)"),
            self.budget,
        )


def profiled(raw: list[tuple[bytes, bytes]], profile: list[str]) -> list[tuple[bytes, bytes]]:
    """``raw`` with the headers ``profile`` names first, in its order and its name casing.

    Unlisted headers follow in the order they had. (HTTP/1.1's writer puts ``Host`` first
    whatever the order, as Go's does.)
    """
    rank: dict[bytes, tuple[int, bytes]] = {}
    for i, name in enumerate(profile):
        if is_token(name):
            rank.setdefault(name.lower().encode("ascii"), (i, name.encode("ascii")))
    listed: list[tuple[int, int, tuple[bytes, bytes]]] = []
    rest: list[tuple[bytes, bytes]] = []
    for j, pair in enumerate(raw):
        found = rank.get(pair[0].lower())
        if found is None:
            rest.append(pair)
        else:
            listed.append((found[0], j, (found[1], pair[1])))
    listed.sort()
    return [pair for _, _, pair in listed] + rest


# Query keys whose values are secrets, compared lower-cased without '-' and '_'.
_SECRET_QUERY_KEYS = frozenset(
    {
        "sig",
        "signature",
        "xamzsignature",
        "xamzcredential",
        "xamzsecuritytoken",
        "xgoogsignature",
        "xgoogcredential",
        "auth",
        "authkey",
        "pwd",
        "pass",
        "passwd",
        "key",
        "token",
        "code",
        "credential",
        "credentials",
        "session",
        "sessionid",
        "sid",
        "jwt",
        "assertion",
        "clientsecret",
        "privatekey",
    }
)
_SECRET_PARTS = ("token", "secret", "passw", "signature", "apikey", "credential", "auth", "session", "private")
_TELEGRAM = re.compile(r"bot\d+:[A-Za-z0-9_-]+")
_OPAQUE = re.compile(r"[A-Za-z0-9._~+=-]{24,}")
REDACTED = "[redacted]"


def _secret_query_key(key: str) -> bool:
    folded = urllib.parse.unquote_plus(key).lower().replace("-", "").replace("_", "")
    return folded in _SECRET_QUERY_KEYS or any(part in folded for part in _SECRET_PARTS) or is_secret_key(key)


def _opaque(text: str) -> bool:
    """A long token-like string with letters and digits mixed: a key, not a word."""
    if not _OPAQUE.fullmatch(text):
        return False
    return any(c.isdigit() for c in text) and any(c.isalpha() for c in text)


def _redact_segment(segment: str) -> str:
    if _TELEGRAM.fullmatch(urllib.parse.unquote(segment)):
        return "bot" + REDACTED
    if _opaque(urllib.parse.unquote(segment)):
        return REDACTED
    return segment


def redact_url(url: str) -> str:
    """``url`` for a log line: no userinfo, no fragment, secret-looking query values and path
    tokens (``/bot<token>/``, long opaque segments) replaced by ``[redacted]``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc.rsplit("@", 1)[-1]
    path = "/".join(_redact_segment(s) for s in parts.path.split("/"))
    query = parts.query
    if query:
        out = []
        for item in query.split("&"):
            key, eq, value = item.partition("=")
            if eq and value and (_secret_query_key(key) or _opaque(urllib.parse.unquote_plus(value))):
                value = REDACTED
            out.append(key + eq + value)
        query = "&".join(out)
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))
