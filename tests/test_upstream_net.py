"""``hostd.upstream._net.body``: the response close that a second cancellation cannot
interrupt (issue 9: the anyio shield did not shield plain asyncio tasks), and the piece
splitter both clients use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from hostd.streams import PIECE_BYTES
from hostd.upstream._net import close_response, pieces, read_bounded

pytestmark = pytest.mark.anyio


class SlowClose(httpx.AsyncByteStream):
    """A body whose close waits for the test: what a close through a busy pool looks like."""

    def __init__(self, chunks: list[bytes] | None = None) -> None:
        self.chunks = chunks or []
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.started.set()
        await self.release.wait()
        self.closed = True


async def test_a_second_cancel_does_not_interrupt_the_close() -> None:
    body = SlowClose()
    response = httpx.Response(200, stream=body)
    closer = asyncio.ensure_future(close_response(response))
    await asyncio.wait_for(body.started.wait(), 5)
    closer.cancel()
    await asyncio.sleep(0)  # let the first cancel land (a loop turn, not a wait for time)
    closer.cancel()
    await asyncio.sleep(0)
    assert not closer.done()  # still closing: neither cancel cut it short
    body.release.set()
    with pytest.raises(asyncio.CancelledError):
        await closer  # and the cancellation is not swallowed
    assert body.closed


async def test_a_close_that_never_ends_is_given_up_after_its_timeout() -> None:
    body = SlowClose()
    response = httpx.Response(200, stream=body)
    await asyncio.wait_for(close_response(response, timeout=0.01), 5)
    assert not body.closed


async def test_closing_a_closed_response_is_free() -> None:
    response = httpx.Response(200, content=b"x")
    await response.aread()
    assert response.is_closed
    await close_response(response)


async def test_pieces_are_at_most_32_kib_and_small_ones_pass_as_they_came() -> None:
    big = bytes(range(256)) * 300  # 76,800 bytes in one chunk
    small = b"tiny"
    response = httpx.Response(200, stream=SlowClose([small, big]))
    response.stream.release.set()  # type: ignore[union-attr]
    out = [piece async for piece in pieces(response)]
    assert out[0] is small  # no copy on the hot path
    assert all(1 <= len(p) <= PIECE_BYTES for p in out)
    assert b"".join(out[1:]) == big


async def test_read_bounded_stops_past_the_limit() -> None:
    async def source() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 10

    assert await read_bounded(source(), 100, lambda: ValueError("too big")) == b"x" * 100
    with pytest.raises(ValueError, match="too big"):
        await read_bounded(source(), 99, lambda: ValueError("too big"))


class QuickClose(httpx.AsyncByteStream):
    closed_in: asyncio.Task[object] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b""

    async def aclose(self) -> None:
        self.closed_in = asyncio.current_task()  # type: ignore[assignment]


async def test_a_close_that_does_not_suspend_runs_inline_without_a_task_of_its_own() -> None:
    body = QuickClose()
    response = httpx.Response(200, stream=body)
    await close_response(response)
    assert response.is_closed
    assert body.closed_in is asyncio.current_task()


async def test_a_suspending_close_runs_in_a_task_of_its_own_and_finishes() -> None:
    body = SlowClose()
    response = httpx.Response(200, stream=body)
    closer = asyncio.ensure_future(close_response(response))
    await asyncio.wait_for(body.started.wait(), 5)
    body.release.set()
    await asyncio.wait_for(closer, 5)
    assert body.closed
