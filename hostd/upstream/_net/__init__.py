"""The one network stack both upstream clients use (private to :mod:`hostd.upstream`).

- :mod:`.backend`: httpcore's network layer on plain asyncio streams;
- :mod:`.egress`: the egress policy and the network backend that enforces it;
- :mod:`.transport`: httpx's transport interface over sharded httpcore pools;
- :mod:`.body`: response bodies in pieces, bounded reads, a close that cannot be interrupted;
- :mod:`.h1body`: hostd's own HTTP/1.1 body reader for streams, on a connection taken from httpcore.

Nothing here translates exceptions: each client does that in one function of its own.
"""

import zlib

import httpcore
import httpx

from hostd import __version__
from hostd.upstream._net.backend import AsyncioBackend, client_ssl_context, upstream_aborter
from hostd.upstream._net.body import BodyBudget, Gunzip, close_response, pieces, read_bounded, read_prefix
from hostd.upstream._net.egress import EgressBackend, EgressDenied, EgressPolicy
from hostd.upstream._net.h1body import H1Body, take_over
from hostd.upstream._net.transport import PooledTransport

USER_AGENT = f"hostd/{__version__}"  # sent when the plugin set no User-Agent, by both clients

# Everything the stack raises for a failed exchange (not for a bug): what the clients translate.
NETWORK_ERRORS: tuple[type[Exception], ...] = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.StreamError,
    httpcore.ConnectionNotAvailable,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
    httpcore.ProtocolError,
    httpcore.NetworkError,
    httpcore.TimeoutException,
    zlib.error,
    OSError,
    UnicodeError,
)

__all__ = [
    "NETWORK_ERRORS",
    "USER_AGENT",
    "AsyncioBackend",
    "BodyBudget",
    "EgressBackend",
    "EgressDenied",
    "EgressPolicy",
    "Gunzip",
    "H1Body",
    "PooledTransport",
    "client_ssl_context",
    "close_response",
    "pieces",
    "read_bounded",
    "read_prefix",
    "take_over",
    "upstream_aborter",
]
