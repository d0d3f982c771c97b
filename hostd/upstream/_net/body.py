"""Response bodies, the same way for both clients: pieces of at most 32 KiB as they arrive,
gzip decoded only when hostd asked for it, whole bodies read within a bound, and a close
that a second cancellation cannot interrupt.

The piece loop is the relay's hot path (tuned with the benchmark): a piece that fits is
passed on as it came, without a copy or any per-piece bookkeeping.
"""

from __future__ import annotations

import asyncio
import types
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Generator, Iterator
from typing import Any

import httpx

from hostd.streams import PIECE_BYTES

CLOSE_TIMEOUT_S = 5.0  # the longest a response close may take before its connection is dropped


class Gunzip:
    """Incremental gzip decoding (multi-member, as Go's reader) in bounded pieces."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._fed = False

    def feed(self, data: bytes, limit: int = PIECE_BYTES) -> Iterator[bytes]:
        self._fed = self._fed or bool(data)
        while data:
            out = self._d.decompress(data, limit)
            if out:
                yield out
            if self._d.eof:
                data = self._d.unused_data
                if data:
                    self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                continue
            data = self._d.unconsumed_tail
            if not out and not data:
                break

    def finish(self) -> None:
        """Raise ``zlib.error`` when the body ended inside a gzip member."""
        if self._fed and not self._d.eof:
            raise zlib.error("unexpected EOF")


async def pieces(response: httpx.Response, gunzip: Gunzip | None = None) -> AsyncGenerator[bytes, None]:
    """The body as it arrives (decoded through ``gunzip`` when given), in pieces of at most 32 KiB."""
    async for raw in response.aiter_raw():
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


class BodyBudget:
    """Bytes of whole bodies buffered at once by one client, across all sessions."""

    __slots__ = ("buffered", "limit", "too_much")

    def __init__(self, limit: int, too_much: Callable[[], Exception]) -> None:
        self.buffered = 0
        self.limit = limit
        self.too_much = too_much

    def release(self, size: int) -> None:
        self.buffered -= size


async def read_bounded(
    source: AsyncIterator[bytes],
    limit: int,
    too_big: Callable[[], Exception],
    budget: BodyBudget | None = None,
) -> bytes:
    """The whole body, or ``too_big()`` past ``limit`` bytes (``budget.too_much()`` past the budget).

    A body returned stays counted in ``budget``: the caller releases it (``budget.release``)
    once the answer holding it has been written (PROTOCOL §11)."""
    parts: list[bytes] = []
    size = 0
    try:
        async for piece in source:
            size += len(piece)
            if budget is not None:
                budget.buffered += len(piece)
            if size > limit:
                raise too_big()
            if budget is not None and budget.buffered > budget.limit:
                raise budget.too_much()
            parts.append(piece)
    except BaseException:
        if budget is not None:
            budget.buffered -= size
        raise
    return b"".join(parts)


async def read_prefix(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes from the start of the body (an error answer's text)."""
    parts: list[bytes] = []
    size = 0
    async for piece in response.aiter_raw():
        parts.append(piece)
        size += len(piece)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


async def close_response(response: httpx.Response, timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Close ``response`` (its connection back to the pool, or dropped), bounded in time.

    hostd runs plain asyncio tasks, where anyio's shield does not protect against
    ``Task.cancel()``. The close is first run inline: it almost always finishes without
    suspending (a stream closed by the table had its socket dropped already), and then costs
    no task. If it does suspend, the rest of it runs as a task of its own awaited through
    ``asyncio.shield``: a cancellation arriving meanwhile (a stream closed twice, a session
    ending) waits for it instead of interrupting it halfway, and is raised once it is done.
    A close that takes longer than ``timeout`` is cancelled, which drops the connection.
    """
    if response.is_closed:
        return
    closing = response.aclose()
    try:
        waiting_on = closing.send(None)
    except StopIteration:
        return  # done without suspending: the common case
    except Exception:
        return  # the close failed: the connection is gone either way
    await settle_close(closing, waiting_on, timeout)


async def settle_close(closing: Coroutine[Any, Any, None], waiting_on: Any, timeout: float = CLOSE_TIMEOUT_S) -> None:
    """The rest of a close that suspended on ``waiting_on``, as :func:`close_response` runs it."""
    task = asyncio.ensure_future(_resume(closing, waiting_on))
    task.add_done_callback(_retrieve)
    deadline = asyncio.get_running_loop().time() + timeout
    cancelled = False
    while not task.done():
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True  # not ours to swallow: raised below, once the close is done
        except TimeoutError:
            task.cancel()  # drops the connection; the task ends on its own
            break
        except Exception:
            break  # the close failed: the connection is gone either way
    if cancelled:
        raise asyncio.CancelledError


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """Go on driving ``coro`` from where it suspended (it yielded ``waiting_on``), as
    ``await`` would have: what it waits on is handed to the task, results and exceptions back."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as e:  # a cancellation or a timeout from the task: into the close
            try:
                waiting_on = coro.throw(e)
            except StopIteration:
                return
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration:
                return


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # a failed close is expected (a dropped peer), never "not retrieved"
