"""The model backend: ``host.model.*`` requests run through the proxy's own HTTP API.

The proxy (CLIProxyAPI) keeps the model pipeline: routing, credentials, translation and
usage. hostd only picks the endpoint for the entry protocol, passes the body through byte
for byte, and adds the proxy key and the ``X-CPA-*`` headers that tell the proxy who is
calling (PROTOCOL.md §6).

This client is operator configuration: it is exempt from the egress policy, has its own
connection pool, and never connects through a plugin's ``proxy_url`` (that is validated
and forwarded as a header for the proxy to use). It never adds headers the plugin did not
ask for beyond those: requests are built as ``httpx.Request`` objects directly, so httpx's
defaults (``Accept-Encoding`` and friends) stay out and the body comes back as sent.
"""

from __future__ import annotations

import asyncio
import codecs
import time
import urllib.parse
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import httpcore
import httpx
import orjson

from hostd.config import Config
from hostd.errors import HostCallFailed, HostError, LimitExceeded
from hostd.logs import Logger
from hostd.upstream._net import (
    NETWORK_ERRORS,
    USER_AGENT,
    AsyncioBackend,
    PooledTransport,
    client_ssl_context,
    close_response,
    pieces,
    read_bounded,
    read_prefix,
)
from hostd.upstream.headers import has_header, header_list, header_map

# Entry protocol -> (endpoint, streaming endpoint). ``{model}`` is path-escaped.
ENDPOINTS: dict[str, tuple[str, str]] = {
    "openai": ("/v1/chat/completions", "/v1/chat/completions"),
    "openai-response": ("/v1/responses", "/v1/responses"),
    "claude": ("/v1/messages", "/v1/messages"),
    "gemini": ("/v1beta/models/{model}:generateContent", "/v1beta/models/{model}:streamGenerateContent"),
}
SUPPORTED_PROTOCOLS = tuple(ENDPOINTS)

PROXY_URL_SCHEMES = frozenset({"http", "https", "socks5", "socks5h"})

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Never forwarded from the plugin: hostd sets the credentials and the framing itself.
DROPPED_HEADERS = HOP_BY_HOP | {"host", "content-length", "authorization", "x-api-key", "x-goog-api-key"}
CPA_PREFIX = "x-cpa-"

ERROR_TEXT_BYTES = 1024  # the most of a non-JSON error body that becomes the message
ERROR_BODY_READ = 64 * 1024  # how much of an error body is read to find the message


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCall:
    """One validated model request (the handler has done the spec's checks)."""

    entry_protocol: str
    model: str
    stream: bool
    body: bytes
    headers: dict[str, list[str]] | None
    query: dict[str, list[str]] | None
    plugin_id: str
    session_id: str
    callback_id: str = ""
    exit_protocol: str = ""
    alt: str = ""
    auth_id: str = ""
    forced_provider: str = ""
    proxy_url: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class ModelResult:
    status_code: int
    headers: dict[str, list[str]]
    body: bytes


def check_entry_protocol(value: str) -> str:
    """``value`` when it is one of the supported protocols; else -32000 (http_status 400) naming them."""
    if value not in ENDPOINTS:
        raise HostCallFailed(
            f"unsupported entry_protocol {orjson.dumps(value).decode()}: "
            f"supported values are {', '.join(SUPPORTED_PROTOCOLS)}",
            http_status=400,
        )
    return value


def check_proxy_url(value: str) -> str:
    """``value`` trimmed when it is a usable proxy URL (or empty); else ``invalid proxy_url``."""
    url = value.strip()
    if not url:
        return ""
    if any(c.isspace() or c < " " or c == "\x7f" for c in url):
        raise HostCallFailed("invalid proxy_url", http_status=400)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError when not a number or outside 0..65535
    except ValueError:
        raise HostCallFailed("invalid proxy_url", http_status=400) from None
    if parts.scheme.lower() not in PROXY_URL_SCHEMES or not parts.hostname or port == 0:
        raise HostCallFailed("invalid proxy_url", http_status=400)
    return url


def endpoint_path(protocol: str, model: str, stream: bool) -> str:
    plain, streaming = ENDPOINTS[protocol]
    template = streaming if stream else plain
    return template.replace("{model}", urllib.parse.quote(model, safe=""))


def forwarded_headers(headers: dict[str, list[str]] | None) -> list[tuple[str, str]]:
    """The plugin's headers minus credentials, framing, hop-by-hop and ``X-CPA-*`` ones.

    As an HTTP proxy does, headers named in the plugin's ``Connection`` header count as
    hop-by-hop too.
    """
    pairs = header_list(headers)
    named = {
        token.strip().lower() for name, value in pairs if name.lower() == "connection" for token in value.split(",")
    }
    out = []
    for name, value in pairs:
        lname = name.strip().lower()
        if lname in DROPPED_HEADERS or lname in named or lname.startswith(CPA_PREFIX):
            continue
        out.append((name, value))
    return out


def error_message(status: int, body: bytes) -> str:
    """The proxy's error text: ``error.message`` from JSON, else the trimmed body, else a default."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            if isinstance(message, str) and message.strip():
                return message.strip()
    # Not final: a character cut in half at the limit is left out, not replaced.
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(body.strip()[:ERROR_TEXT_BYTES]).strip()
    return text or f"model execution failed with status {status}"


def response_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    """The proxy's answer headers for the plugin, without the hop-by-hop ones of hostd's connection."""
    return {k: v for k, v in header_map(raw).items() if k.lower() not in HOP_BY_HOP}


def invalid_request(e: BaseException) -> HostCallFailed:
    """The plugin's request cannot be sent as given (a header name or value HTTP forbids)."""
    return HostCallFailed(f"model execution failed: invalid request: {e}", http_status=400)


def transport_error(e: BaseException) -> HostCallFailed:
    text = str(e) or type(e).__name__
    return HostCallFailed(f"model execution failed: {text}", http_status=502, retryable=True)


def translate(e: BaseException) -> HostError:
    """The ``host.model.*`` error for an exception of the network stack (the one place)."""
    if isinstance(e, HostError):
        return e
    if isinstance(e, (httpx.LocalProtocolError, httpcore.LocalProtocolError)):
        return invalid_request(e)
    return transport_error(e)


class ModelBackend:
    """The proxy's HTTP API as a model executor. One pooled client for the daemon's life."""

    def __init__(self, config: Config, logger: Logger) -> None:
        self.base_url = config.model.base_url.rstrip("/")
        self.api_key = config.model_api_key
        self.timeout_s = config.model.timeout_s
        self.max_body_bytes = config.http.max_body_bytes
        self.logger = logger
        timeout = httpx.Timeout(
            connect=min(config.http.connect_timeout_s, self.timeout_s), read=None, write=self.timeout_s, pool=None
        )
        # Many model streams may be open at once: the pools never make one wait for a connection.
        transport = PooledTransport(ssl_context=client_ssl_context(), network_backend=AsyncioBackend())
        self.client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def build(self, call: ModelCall) -> httpx.Request:
        """The request for ``call``: endpoint, query, forwarded headers, key and ``X-CPA-*``."""
        url = self.base_url + endpoint_path(call.entry_protocol, call.model, call.stream)
        query: list[tuple[str, str]] = []
        if call.stream and call.entry_protocol == "gemini":
            query.append(("alt", "sse"))
        query += [(k, v) for k, values in (call.query or {}).items() for v in values]
        if query:
            url += "?" + urllib.parse.urlencode(query)
        pairs = forwarded_headers(call.headers)
        if not has_header(pairs, "content-type"):
            pairs.append(("Content-Type", "application/json"))
        if not has_header(pairs, "user-agent"):
            pairs.append(("User-Agent", USER_AGENT))
        if self.api_key:
            pairs.append(("Authorization", f"Bearer {self.api_key}"))
            if call.entry_protocol == "claude":
                pairs.append(("X-Api-Key", self.api_key))
            elif call.entry_protocol == "gemini":
                pairs.append(("X-Goog-Api-Key", self.api_key))
        pairs.append(("X-CPA-Skip-Plugin", call.plugin_id))
        for name, value in (
            ("X-CPA-Host-Callback-ID", call.callback_id),
            ("X-CPA-Exit-Protocol", call.exit_protocol),
            ("X-CPA-Alt", call.alt),
            ("X-CPA-Auth-ID", call.auth_id),
            ("X-CPA-Forced-Provider", call.forced_provider),
            ("X-CPA-Proxy-URL", call.proxy_url),
            ("X-CPA-Path", call.path),
        ):
            if value:
                pairs.append((name, value))
        return httpx.Request("POST", url, headers=pairs, content=call.body)

    async def execute(self, call: ModelCall) -> ModelResult:
        """Run ``call`` and read the whole answer, within ``model.timeout_s``."""
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self.open(call)
                try:
                    body = await read_bounded(pieces(response), self.max_body_bytes, self._too_big)
                except NETWORK_ERRORS as e:
                    raise translate(e) from None
                finally:
                    await close_response(response)
        except TimeoutError:
            raise transport_error(TimeoutError(f"timeout after {self.timeout_s:g}s")) from None
        return ModelResult(response.status_code, response_headers(response.headers.raw), body)

    async def open_stream(self, call: ModelCall) -> httpx.Response:
        """Send ``call`` and return once a 1xx-3xx answer's headers arrive (within ``timeout_s``)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.open(call)
        except TimeoutError:
            raise transport_error(TimeoutError(f"timeout after {self.timeout_s:g}s")) from None

    async def open(self, call: ModelCall) -> httpx.Response:
        """Send and wait for the headers. A 4xx/5xx answer is read, closed and raised."""
        try:
            request = self.build(call)
        except (UnicodeEncodeError, ValueError, TypeError) as e:
            raise invalid_request(e) from None
        started = time.monotonic()
        try:
            response = await self.client.send(request, stream=True)
        except NETWORK_ERRORS as e:
            raise translate(e) from None
        if self.logger.enabled(10):
            self.logger.debug(
                "model request",
                entry_protocol=call.entry_protocol,
                path=request.url.path,
                stream=call.stream,
                status=response.status_code,
                ms=round((time.monotonic() - started) * 1000, 1),
                session=call.session_id,
                plugin=call.plugin_id,
            )
        if response.status_code >= 400:
            try:
                body = await read_prefix(response, ERROR_BODY_READ)
            except NETWORK_ERRORS:
                body = b""
            finally:
                await close_response(response)
            status = response.status_code
            raise HostCallFailed(error_message(status, body), http_status=status)
        return response

    def pieces(self, response: httpx.Response) -> AsyncGenerator[bytes, None]:
        """The body as it arrives, in pieces of at most 32 KiB; SSE events are not re-framed."""
        return pieces(response)

    def _too_big(self) -> LimitExceeded:
        return LimitExceeded(f"model response body exceeds max_body_bytes ({self.max_body_bytes} bytes)")
