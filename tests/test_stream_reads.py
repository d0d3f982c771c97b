"""``stream_read`` answered inline when its piece is already buffered (the ``fast`` twin of
the handler), and waiting otherwise: either way, reads of one stream are served in arrival
order (PROTOCOL §7), each read gets the next piece, and nothing is lost or repeated.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from tests.support.hostd_proc import HostdProcess
from tests.support.raw import RawConn
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio

PIECES = [f"piece-{i:05d};".encode() * 300 for i in range(400)]  # ~4 KiB each, all distinct


@pytest.mark.parametrize("depth", [1, 4, 16])
async def test_pipelined_reads_get_the_pieces_in_the_order_they_were_sent(
    hp: HostdProcess, upstream: Upstream, depth: int
) -> None:
    @upstream.route("/pieces")
    async def pieces(_: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for piece in PIECES:
                yield piece

        return Response(200, [("Content-Type", "text/event-stream")], chunks=body())

    assert hp.socket is not None
    async with await RawConn.open(hp.socket) as conn:
        opened = await conn.call("host.http.do_stream", {"url": upstream.url + "/pieces"}, rid="open")
        stream_id = opened["result"]["stream_id"]
        method = "host.http.stream_read"
        answers: dict[int, dict[str, object]] = {}
        sent = 0
        done_at: int | None = None

        async def send_one() -> None:
            nonlocal sent
            sent += 1
            await conn.send_json({"jsonrpc": "2.0", "id": sent, "method": method, "params": {"stream_id": stream_id}})

        for _ in range(depth):
            await send_one()
        while len(answers) < sent:
            answer = await conn.line(timeout=30)
            answers[answer["id"]] = answer
            result = answer.get("result") or {}
            if result.get("done"):
                done_at = min(done_at or answer["id"], answer["id"])
            if done_at is None:
                await send_one()
    assert done_at is not None
    ordered = [answers[i]["result"] for i in range(1, done_at)]
    payload = b"".join(base64.b64decode(r["payload"]) for r in ordered)  # type: ignore[index,arg-type]
    assert payload == b"".join(PIECES)
    # Every read from the end on got the end, or "not open" once the stream was gone.
    assert sorted(answers) == list(range(1, sent + 1))
    for rid in range(done_at, sent + 1):
        late = answers[rid]
        assert late.get("result") == {"done": True} or "is not open" in late["error"]["message"], late
