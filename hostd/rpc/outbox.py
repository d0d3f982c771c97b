"""The session's writer: answers queued, coalesced into one write per loop turn, bounded.

Lines are appended to a list and written by one flush scheduled with ``call_soon``, so a
burst of answers costs one system call. Flow control comes from the transport: while the
peer does not read, the session stops reading its requests (``pause_writing``). What a
peer leaves unread is bounded: past ``max_output_bytes`` waiting in the transport the
session is closed (its owner decides how, through ``on_overflow``), and every session's
unread bytes add up in one :class:`OutputBudget` that refuses new calls while it is full.

A failed write ends the session at once (``on_lost``). Nothing here knows JSON-RPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class Output(Protocol):
    """The writing half of a transport (a socket, or stdout's pipe)."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...


class OutputBudget:
    """Unread answer bytes across all sessions (``limits.max_total_output_bytes``)."""

    __slots__ = ("limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0

    @property
    def full(self) -> bool:
        return self.total > self.limit


class Outbox:
    __slots__ = (
        "_budget",
        "_buffered",
        "_flush_scheduled",
        "_loop",
        "_on_lost",
        "_on_overflow",
        "_out",
        "_output",
        "lost",
        "max_bytes",
        "queue",
    )

    def __init__(
        self,
        *,
        max_bytes: int,
        budget: OutputBudget,
        on_lost: Callable[[BaseException], None],
        on_overflow: Callable[[int], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        # Answers produced inside a ``feed`` call go straight here; the feed flushes once.
        self.queue = self._out.append
        self._output: Output | None = None
        self._flush_scheduled = False
        self._buffered = 0  # our share of ``budget.total``: bytes the transport still holds
        self._budget = budget
        self._on_lost = on_lost
        self._on_overflow = on_overflow
        self.max_bytes = max_bytes
        self.lost = False

    def attach(self, output: Output) -> None:
        self._output = output

    def write(self, line: bytes) -> None:
        """Queue one line and make sure a flush follows this loop turn."""
        if self.lost:
            return
        self._out.append(line)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out or self._output is None or self.lost:
            out.clear()
            return
        out.append(b"")
        data = b"\n".join(out)
        out.clear()
        try:
            self._output.write(data)
        except Exception as e:  # a failed write ends the session at once
            self.lost = True
            self._on_lost(e)
            return
        self.account()

    def account(self) -> None:
        """Re-read what the transport still holds; called after writes and when it drains."""
        size = _buffer_size(self._output)
        self._budget.total += size - self._buffered
        self._buffered = size
        if size > self.max_bytes:
            self._on_overflow(size)

    def release(self) -> None:
        """The session is over: its unread bytes no longer count."""
        self._budget.total -= self._buffered
        self._buffered = 0
        self._out.clear()


def _buffer_size(output: object) -> int:
    get = getattr(output, "get_write_buffer_size", None)
    if get is None:
        return 0
    try:
        return int(get())
    except Exception:  # a closed transport
        return 0
