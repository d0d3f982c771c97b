"""PROTOCOL.md §13 ``wire_profile`` on ``host.http.do`` / ``do_stream``, seen on the wire.

The upstream is a raw socket server that keeps the request head byte for byte, so header
order and name casing are checked exactly as they were sent, not as a parser reports them.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hostd.client import Client
from tests.support.hostd_proc import HostdProcess
from tests.support.loopback import LoopbackServer

pytestmark = pytest.mark.anyio
T = 10.0
PAYLOAD = b"compressible " * 100


class RawServer(LoopbackServer):
    """Answers every request with a gzip body and keeps each request head as bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.heads: list[bytes] = []

    @property
    def url(self) -> str:
        return f"{super().url}/wire"

    def names(self, index: int = -1) -> list[str]:
        """The header names of a request, in wire order and casing."""
        lines = self.heads[index].decode("latin-1").split("\r\n")[1:]
        return [line.split(":", 1)[0] for line in lines if line]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = gzip.compress(PAYLOAD)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    async with RawServer() as srv:
        yield srv


@pytest.fixture
async def client(hostd: HostdProcess) -> AsyncIterator[Client]:
    async with await hostd.connect() as c:
        yield c


async def do(c: Client, params: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await c.call("host.http.do", params, timeout=T)
    return result


async def test_header_profile_sets_wire_order_and_casing(client: Client, raw: RawServer) -> None:
    headers = {"x-second": ["2"], "accept": ["*/*"], "X-FIRST": ["1"], "x-unlisted": ["u"]}
    profile = ["X-First", "x-SECOND", "Accept", "User-Agent"]
    await do(client, {"url": raw.url, "headers": headers, "wire_profile": {"header_profile": profile}})
    names = raw.names()
    assert names[0] == "Host"  # HTTP/1.1's writer puts Host first, as Go's does
    listed = [n for n in names if n.lower() in {p.lower() for p in profile}]
    assert listed == profile  # in the profile's order and exactly its casing
    # Unlisted headers follow, in the order given (the plugin's, then hostd's own).
    rest = names[names.index("User-Agent") + 1 :]
    assert rest == ["x-unlisted", "Accept-Encoding"]


async def test_without_a_profile_header_names_go_out_as_given(client: Client, raw: RawServer) -> None:
    await do(client, {"url": raw.url, "headers": {"x-MiXeD": ["1"], "ANOTHER": ["2"]}})
    names = raw.names()
    assert names.index("x-MiXeD") < names.index("ANOTHER")


async def test_profile_inside_request_wins_over_the_top_level_one(client: Client, raw: RawServer) -> None:
    await do(
        client,
        {
            "wire_profile": {"header_profile": ["b-header", "a-header"]},
            "request": {
                "url": raw.url,
                "headers": {"a-header": ["1"], "b-header": ["2"]},
                "wire_profile": {"header_profile": ["A-Header", "B-Header"]},
            },
        },
    )
    names = raw.names()
    assert names.index("A-Header") < names.index("B-Header")


async def test_a_null_request_profile_leaves_the_top_level_one(client: Client, raw: RawServer) -> None:
    await do(
        client,
        {
            "wire_profile": {"header_profile": ["B-Header", "A-Header"]},
            "request": {"url": raw.url, "headers": {"a-header": ["1"], "b-header": ["2"]}, "wire_profile": None},
        },
    )
    names = raw.names()
    assert names.index("B-Header") < names.index("A-Header")


async def test_disable_auto_compression_sends_no_accept_encoding_and_keeps_the_body(
    client: Client, raw: RawServer
) -> None:
    plain = await do(client, {"url": raw.url})
    assert base64.b64decode(plain["Body"]) == PAYLOAD  # hostd asked for gzip and decoded it
    assert "Accept-Encoding" in raw.names()
    kept = await do(client, {"url": raw.url, "wire_profile": {"disable_auto_compression": True, "http1_only": True}})
    assert "accept-encoding" not in [n.lower() for n in raw.names()]
    assert base64.b64decode(kept["Body"]) == gzip.compress(PAYLOAD)
    assert kept["Headers"]["Content-Encoding"] == ["gzip"]


async def test_do_stream_takes_the_profile_too(client: Client, raw: RawServer) -> None:
    opened = await client.call(
        "host.http.do_stream",
        {
            "url": raw.url,
            "headers": {"x-b": ["1"], "x-a": ["2"]},
            "wire_profile": {"header_profile": ["X-A", "X-B"], "disable_auto_compression": True},
        },
        timeout=T,
    )
    names = raw.names()
    assert names.index("X-A") < names.index("X-B")
    assert opened["headers"]["Content-Encoding"] == ["gzip"]
    await client.call("host.http.stream_close", {"stream_id": opened["stream_id"]}, timeout=T)


async def test_head_and_range_requests_get_no_automatic_gzip(client: Client, raw: RawServer) -> None:
    """As Go's transport decides: no Accept-Encoding for HEAD or for a Range request."""
    await do(client, {"url": raw.url, "headers": {"Range": ["bytes=0-10"]}})
    assert "Accept-Encoding" not in raw.names()


async def test_wire_profile_keys_fold_as_go_but_an_untagged_wireprofile_does_not_match(
    client: Client, raw: RawServer
) -> None:
    headers = {"x-b": ["1"], "x-a": ["2"]}
    await do(client, {"url": raw.url, "headers": headers, "WireProfile": {"header_profile": ["X-A", "X-B"]}})
    assert raw.names().index("x-b") < raw.names().index("x-a")  # ignored: underscores are significant
    await do(client, {"url": raw.url, "headers": headers, "Wire_Profile": {"Header_Profile": ["X-A", "X-B"]}})
    assert raw.names().index("X-A") < raw.names().index("X-B")
