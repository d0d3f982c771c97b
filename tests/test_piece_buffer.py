"""The bounded buffer between a stream's producer and its readers."""

from __future__ import annotations

import asyncio

import pytest

from hostd.streams import ABORTED, ENDED, BufferClosed, End, PieceBuffer

pytestmark = pytest.mark.anyio


async def test_put_waits_when_full_and_resumes_after_a_get() -> None:
    buf: PieceBuffer[bytes] = PieceBuffer(2)
    await buf.put(b"1")
    await buf.put(b"2")
    third = asyncio.ensure_future(buf.put(b"3"))
    await asyncio.sleep(0)  # one loop turn: the put has run up to its wait
    assert not third.done()
    assert await buf.get() == b"1"
    async with asyncio.timeout(5):
        await third
    assert [await buf.get(), await buf.get()] == [b"2", b"3"]


async def test_cancelled_get_takes_nothing() -> None:
    buf: PieceBuffer[bytes] = PieceBuffer(2)
    waiting = asyncio.ensure_future(buf.get())
    await asyncio.sleep(0)
    waiting.cancel()
    await buf.put(b"kept")
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await buf.get() == b"kept"


async def test_waiting_readers_are_served_in_arrival_order() -> None:
    buf: PieceBuffer[int] = PieceBuffer(4)
    readers = [asyncio.ensure_future(buf.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for i in range(3):
        await buf.put(i)
    async with asyncio.timeout(5):
        assert await asyncio.gather(*readers) == [0, 1, 2]


async def test_finish_delivers_queued_pieces_then_the_end_to_everyone() -> None:
    buf: PieceBuffer[bytes] = PieceBuffer(4)
    await buf.put(b"a")
    buf.finish("boom")
    assert await buf.get() == b"a"
    end = await buf.get()
    assert isinstance(end, End) and end.error == "boom"
    assert await buf.get() == end
    with pytest.raises(BufferClosed):
        await buf.put(b"late")


async def test_abort_drops_pieces_and_fails_a_waiting_put() -> None:
    buf: PieceBuffer[bytes] = PieceBuffer(1)
    await buf.put(b"x")
    blocked = asyncio.ensure_future(buf.put(b"y"))
    reader_buf: PieceBuffer[bytes] = PieceBuffer(1)
    reader = asyncio.ensure_future(reader_buf.get())
    await asyncio.sleep(0)
    buf.abort()
    reader_buf.finish()
    with pytest.raises(BufferClosed):
        await blocked
    assert await buf.get() is ABORTED
    assert await reader is ENDED


async def test_merging_buffer_hands_a_reader_everything_available_up_to_the_limit() -> None:
    buf: PieceBuffer[bytes] = PieceBuffer(4, merge=8)
    for piece in (b"ab", b"cd", b"efgh", b"ij"):
        await buf.put(piece)
    assert await buf.get() == b"abcdefgh"  # three small pieces that waited: one read
    assert await buf.get() == b"ij"  # would have passed the limit: kept apart
    await buf.put(b"k")
    assert await buf.get() == b"k"  # nothing waits to fill a piece


async def test_a_reader_arriving_after_an_earlier_one_was_woken_takes_the_next_piece() -> None:
    """Arrival order holds across the gap between a waiting reader's wake-up and its run: a
    later reader (inline or awaiting) used to take the piece the earlier one was woken for."""
    buf: PieceBuffer[bytes] = PieceBuffer(4)
    first = asyncio.ensure_future(buf.get())
    await asyncio.sleep(0)  # first waits
    await buf.put(b"1")  # first is woken for it; it has not run yet (put did not suspend)
    assert buf.get_nowait() is None  # nothing unclaimed yet
    await buf.put(b"2")
    assert buf.get_nowait() == b"2"  # the first piece nobody claimed
    async with asyncio.timeout(5):
        assert await first == b"1"


async def test_a_woken_reader_that_is_cancelled_passes_its_piece_on() -> None:
    buf: PieceBuffer[bytes] = PieceBuffer(4)
    first = asyncio.ensure_future(buf.get())
    second = asyncio.ensure_future(buf.get())
    await asyncio.sleep(0)
    await buf.put(b"only")
    first.cancel()  # woken for "only", cancelled before it ran
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(5):
        assert await second == b"only"
    assert buf.get_nowait() is None


async def test_at_the_end_a_late_reader_gets_the_end_and_earlier_ones_their_pieces() -> None:
    buf: PieceBuffer[bytes] = PieceBuffer(4)
    first = asyncio.ensure_future(buf.get())
    await asyncio.sleep(0)
    await buf.put(b"last")
    buf.finish()
    assert buf.get_nowait() is ENDED  # "last" is the first reader's
    async with asyncio.timeout(5):
        assert await first == b"last"
    assert await buf.get() is ENDED
