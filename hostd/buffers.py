"""The bounded buffer between a stream's producer and its readers (:class:`PieceBuffer`),
and the end marker readers see (:class:`End`). Nothing here knows what a stream carries."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class End:
    """The last thing a reader sees: a clean end (``error == ""``), an error, or an abort.

    Immutable (:data:`ENDED` and :data:`ABORTED` are shared), equal by value. A plain class:
    a dataclass compiles its methods at every start."""

    __slots__ = ("aborted", "error")

    error: str
    aborted: bool

    def __init__(self, error: str = "", aborted: bool = False) -> None:
        object.__setattr__(self, "error", error)
        object.__setattr__(self, "aborted", aborted)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("End is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("End is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, End):
            return NotImplemented
        return self.error == other.error and self.aborted == other.aborted

    def __hash__(self) -> int:
        return hash((self.error, self.aborted))

    def __repr__(self) -> str:
        return f"End(error={self.error!r}, aborted={self.aborted!r})"


ENDED = End()
ABORTED = End(aborted=True)


class BufferClosed(Exception):
    """Raised to a producer whose buffer was finished or aborted (the stream is not open)."""


class PieceBuffer(Generic[T]):
    """A bounded FIFO of pieces with an end marker.

    ``put`` waits while the buffer is full (backpressure); ``get`` waits for a piece or the
    end. A cancelled ``get`` takes nothing, so a cancelled read loses no data. Readers are
    served in arrival order: a waiting reader is woken with a *claim* on the oldest piece
    nobody has claimed, and a reader that arrives while claims are pending takes the first
    unclaimed piece, never one an earlier reader was woken for.
    """

    __slots__ = ("_capacity", "_claimed", "_end", "_getters", "_items", "_merge", "_putters")

    def __init__(self, capacity: int, merge: int = 0) -> None:
        # Lists, not deques: each holds a handful of entries, and an empty deque costs
        # ~600 bytes against a list's 56 (~1.9 KiB per stream, 19 MiB for 10,000).
        self._items: list[T] = []
        self._capacity = capacity
        self._getters: list[asyncio.Future[None]] = []
        self._putters: list[asyncio.Future[None]] = []
        self._claimed = 0  # readers woken for a piece (or the end) that have not run yet
        # > 0 (bytes pieces): a piece put while the previous one still waits is appended
        # to it, up to this size, so one read takes every small piece (SSE events) that is
        # available: "whatever is available, at most 32 KiB, never waiting to fill".
        self._merge = merge
        self._end: End | None = None

    @property
    def ended(self) -> bool:
        return self._end is not None

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        items = self._items
        if self._merge and items and self._end is None:
            last: Any = items[-1]
            if len(last) + len(item) <= self._merge:  # type: ignore[arg-type]
                items[-1] = last + item  # its reader was woken when it was put
                return
        while len(self._items) >= self._capacity and self._end is None:
            await _wait(self._putters)
        if self._end is not None:
            raise BufferClosed
        self._items.append(item)
        if self._getters:
            self._hand_out()

    async def get(self) -> T | End:
        item = self.get_nowait()
        if item is not None:
            return item
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._getters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # woken with a claim it will not use: pass it on
                self._claimed -= 1
                self._hand_out()
            else:
                with contextlib.suppress(ValueError):
                    self._getters.remove(fut)
            raise
        self._claimed -= 1
        if self._items:
            item = self._items.pop(0)  # the oldest: claims are taken in the order they were given
            _wake_one(self._putters)
            return item
        assert self._end is not None
        return self._end

    def get_nowait(self) -> T | End | None:
        """What ``get`` returns without waiting, or None: it would wait (nothing unclaimed yet,
        or earlier readers wait)."""
        if self._getters:
            return None  # they were here first
        if len(self._items) > self._claimed:
            item = self._items.pop(self._claimed)  # the first piece no earlier reader claimed
            _wake_one(self._putters)
            return item
        return self._end  # at the end, what is left (if anything) is claimed

    def _hand_out(self) -> None:
        """Wake waiting readers, oldest first: one per unclaimed piece, every one at the end."""
        getters = self._getters
        while getters and (self._end is not None or len(self._items) > self._claimed):
            fut = getters.pop(0)
            if not fut.done():
                fut.set_result(None)
                self._claimed += 1

    def finish(self, error: str = "") -> None:
        """End after what is queued: readers get the queued pieces, then the end."""
        if self._end is None:
            self._end = End(error) if error else ENDED
            self._hand_out()
            _wake_all(self._putters)

    def abort(self) -> None:
        """End now: queued pieces are dropped, waiting producers get :class:`BufferClosed`."""
        self._items.clear()
        self._end = ABORTED
        self._hand_out()
        _wake_all(self._putters)


async def _wait(waiters: list[asyncio.Future[None]]) -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters.append(fut)
    try:
        await fut
    except asyncio.CancelledError:
        if fut.done() and not fut.cancelled():
            _wake_one(waiters)  # pass the wake-up on; we will not use it
        else:
            with contextlib.suppress(ValueError):
                waiters.remove(fut)
        raise


def _wake_one(waiters: list[asyncio.Future[None]]) -> None:
    while waiters:
        fut = waiters.pop(0)
        if not fut.done():
            fut.set_result(None)
            return


def _wake_all(waiters: list[asyncio.Future[None]]) -> None:
    while waiters:
        fut = waiters.pop(0)
        if not fut.done():
            fut.set_result(None)
