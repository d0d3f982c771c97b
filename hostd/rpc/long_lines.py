"""A session's long lines, scanned off the event loop one at a time and answered in order.

When ``Session._feed`` meets a line that :func:`takes`, it hands that line and
every line after it to :class:`LongLines`: the session's reading pauses, the line goes to a
worker thread for the C pass (``hostd.rpc.scan.scan_line``, which releases the GIL), and its
answer comes from :func:`hostd.rpc.scan.answer`; the lines behind it follow in order. The
fault boundary of the scan is here: a scanner fault is logged once and that line is answered
the usual way, on the loop. ``hostd.rpc.scan`` (and the C module) load on the first long line:
a daemon that never meets one pays nothing for them at start.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hostd.errors import InvalidRequest
from hostd.faults import log_fault
from hostd.rpc.messages import LONG_LINE

if TYPE_CHECKING:
    from hostd.rpc.session import Session

_available: bool | None = None  # is hostd._scan built? (known on the first long line)


def takes(line: bytes | None) -> bool:
    """Is this line read the scanned way? (An object or a batch over ``LONG_LINE``, when the
    scanner is built.)"""
    global _available
    if line is None or len(line) <= LONG_LINE or line[:1] not in (b"{", b"["):
        return False
    if _available is None:
        from hostd.rpc import scan

        _available = scan.available()
    return _available


class LongLines:
    """A session's lines from a long one on: scanned (or answered) one at a time, in order.

    While it runs, the session's reading is paused and lines that still arrive queue behind;
    the peer's EOF waits for the queue too (``eof_pending``). Queued lines are counted
    daemon-wide (``services.scan_budget``, bounded by ``max_total_request_bytes`` but a count
    of its own, so a queued line never makes the dispatcher refuse a call) until they are dispatched; a long
    line met while that count is full is decoded on the loop instead (memory stays bounded,
    only latency suffers).
    Owned by the session: its task is one of the session's own (cancelled with it), and a
    fault in it is that line's."""

    __slots__ = ("eof_pending", "held", "queue", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.queue: collections.deque[bytes | None] | None = None
        self.eof_pending = False
        self.held = 0  # bytes of queued lines counted in services.scan_budget

    def start(self, line: bytes, rest: Iterator[bytes | None]) -> None:
        self.queue = collections.deque()
        self.extend([line, *rest])
        self.session.pause_input()
        self.session.spawn(self._run(), name="long lines")

    def extend(self, lines: list[bytes | None]) -> None:
        assert self.queue is not None
        self.queue.extend(lines)
        size = sum(len(line) for line in lines if line is not None)
        self.held += size
        self.session.services.scan_budget.total += size

    async def _run(self) -> None:
        session = self.session
        dispatcher = session.dispatcher
        from hostd.rpc.scan import answer, names_of, scan_line  # (loaded by takes() already)

        names = names_of(session.methods)
        loop = asyncio.get_running_loop()
        queue = self.queue
        assert queue is not None
        reply = session.outbox.queue
        budget = session.services.scan_budget
        max_batch = session.services.config.limits.max_batch
        try:
            while queue:
                line = queue.popleft()
                held = 0 if line is None else len(line)
                try:
                    if line is None:
                        dispatcher.fail(reply, InvalidRequest("message too large"))
                    elif takes(line) and budget.total <= budget.limit:
                        try:
                            scan = await loop.run_in_executor(None, scan_line, line, names, max_batch)
                            session.services.counters.lines_scanned += 1
                        except Exception as e:  # a scanner fault: the usual way still answers the line
                            log_fault(session.services.logger, "line scan failed", e, session=session.id)
                            scan = None
                        held = self._release(held)  # from here the dispatcher counts what it serves
                        steps = answer(dispatcher, line, scan, reply)
                        for _ in steps or ():  # a batch: other sessions are served between its steps
                            session.outbox.flush()
                            await asyncio.sleep(0)
                    else:
                        held = self._release(held)
                        dispatcher.line(line, reply)
                except Exception as e:  # the line boundary, as in Session._feed
                    session.line_failed(e, reply)
                finally:
                    self._release(held)
                session.outbox.flush()
        finally:
            self._done()

    def _release(self, size: int) -> int:
        self.held -= size
        self.session.services.scan_budget.total -= size
        return 0

    def _done(self) -> None:
        self.queue = None
        session = self.session
        session.services.scan_budget.total -= self.held  # lines never dispatched (the session was cancelled)
        self.held = 0
        if self.eof_pending:
            self.eof_pending = False
            session.eof()
        else:
            session.resume_input()
