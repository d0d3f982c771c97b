"""The session's writer: answers queued, coalesced into one write per loop turn, bounded.

Lines are appended to a list and written by one flush scheduled with ``call_soon``, so a
burst of answers costs one system call. Flow control comes from the transport: while the
peer does not read, the session stops reading its requests (``pause_writing``). What a
peer leaves unread is bounded: past ``max_output_bytes`` waiting in the transport the
session is closed (its owner decides how, through ``on_overflow``), and every session's
unread bytes add up in one :class:`~hostd.rpc.budget.Budget` that refuses new calls while it is full.

``after_written`` tells when an answer has left the transport's buffer: a ``host.http.do``
body stays counted in ``[http] max_total_body_bytes`` until then (PROTOCOL §11).

A failed write ends the session at once (``on_lost``). Nothing here knows JSON-RPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from hostd.rpc.budget import Budget


class Output(Protocol):
    """The writing half of a transport (a socket, or stdout's pipe)."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...


_POLL_S = 0.05


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
        "_poll",
        "_sent",
        "_waiters",
        "lost",
        "max_bytes",
        "queue",
    )

    def __init__(
        self,
        *,
        max_bytes: int,
        budget: Budget,
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
        self._sent = 0  # bytes handed to the transport so far
        self._waiters: list[tuple[int, Callable[[], None]]] = []  # (end position, callback)
        self._poll: asyncio.TimerHandle | None = None
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
            self._release_waiters()
            return
        self._sent += len(data)
        self.account()

    def account(self) -> None:
        """Re-read what the transport still holds; called after writes and when it drains."""
        size = _buffer_size(self._output)
        self._budget.total += size - self._buffered
        self._buffered = size
        if self._waiters:
            self._settle(size)
        if size > self.max_bytes:
            self._on_overflow(size)

    def after_written(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every line queued so far has left the transport's buffer
        (or can no longer be written)."""
        if self.lost or self._output is None:
            callback()
            return
        end = self._sent + sum(len(line) + 1 for line in self._out)
        self._waiters.append((end, callback))
        if not self._out:
            self.account()

    def _settle(self, held: int) -> None:
        written = self._sent - held
        waiters = self._waiters
        while waiters and waiters[0][0] <= written:
            waiters.pop(0)[1]()
        if waiters and self._poll is None:
            # A transport reports draining only past its high-water mark: look again soon.
            self._poll = self._loop.call_later(_POLL_S, self._repoll)

    def _repoll(self) -> None:
        self._poll = None
        if not self.lost:
            self.account()

    def _release_waiters(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        waiters, self._waiters = self._waiters, []
        for _end, callback in waiters:
            callback()

    def release(self) -> None:
        """The session is over: its unread bytes no longer count."""
        self._budget.total -= self._buffered
        self._buffered = 0
        self._out.clear()
        self._release_waiters()


def _buffer_size(output: object) -> int:
    get = getattr(output, "get_write_buffer_size", None)
    if get is None:
        return 0
    try:
        return int(get())
    except Exception:  # a closed transport
        return 0
