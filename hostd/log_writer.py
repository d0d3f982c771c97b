"""The log queue and its writer thread: lines in, written to the log fd in batches, never blocking
the caller.

:func:`new_writer` gives ``hostd._logline.Writer`` (C: a pthread that never takes the GIL, and
host.log's written line in one call) where the package was built with a compiler, else
:class:`PyWriter`, the same queue and thread in Python. Both bound the queue in bytes and in
lines: ``write`` returns False for a line that would overfill it (the caller counts the drop),
and a write to the fd that fails gives up the rest of its batch. This module never formats a
line and never reads configuration.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the interface both writers have (a Protocol class costs start-up time)
    from typing import Protocol

    from hostd._logline import Writer

    class LineWriter(Protocol):
        max_queue_bytes: int
        max_lines: int

        @property
        def queued_bytes(self) -> int: ...

        def write(self, line: bytes, /) -> bool: ...

        def flush(self, timeout: float, /) -> None: ...


BATCH_DELAY_S = 0.005  # a burst gathers for this long: one wake-up and one write per few ms
WRITE_LINES = 4096  # lines joined into one write

_CWriter: type[Writer] | None
try:
    from hostd._logline import Writer as _CWriter
except ImportError:  # built without a C compiler: PyWriter
    _CWriter = None


def new_writer(fd: int, max_queue_bytes: int, max_lines: int, *, c_writer: bool = True) -> LineWriter:
    """The C writer where it was built (and ``c_writer``), else the Python one."""
    if c_writer and _CWriter is not None:
        return _CWriter(fd, max_queue_bytes, max_lines)
    return PyWriter(fd, max_queue_bytes, max_lines)


class PyWriter:
    """hostd/_logline.c's Writer in Python: the caller appends, the thread takes a batch with one
    slice and one ``del`` (each atomic under the GIL), not one pop per line."""

    def __init__(self, fd: int, max_queue_bytes: int, max_lines: int) -> None:
        self.max_queue_bytes = max_queue_bytes
        self.max_lines = max_lines
        self._fd = fd
        self._queue: list[bytes] = []
        self._queued_in = 0  # bytes queued, written by the caller's thread only
        self._queued_out = 0  # bytes taken by the writer, written by the writer thread only
        self._wake = threading.Event()
        self._idle = False  # the writer waits on _wake: the next line sets it (once, not per line)
        self._stopping = False
        self._thread = threading.Thread(target=self._drain, name="hostd-log", daemon=True)
        self._thread.start()

    @property
    def queued_bytes(self) -> int:
        return self._queued_in - self._queued_out

    def write(self, line: bytes) -> bool:
        queued = self._queued_in - self._queued_out
        size = len(line)
        if queued + size > self.max_queue_bytes or len(self._queue) >= self.max_lines:
            return False
        self._queued_in += size
        self._queue.append(line)
        if self._idle:
            self._idle = False
            self._wake.set()
        return True

    def _drain(self) -> None:
        queue = self._queue
        while True:
            self._wake.clear()
            self._idle = True
            # A line queued after the clear either sees _idle (and sets _wake) or is seen here.
            if not queue and not self._stopping:
                self._wake.wait()
            self._idle = False
            if not self._stopping:
                # Let a burst gather, rather than a thread switch (and a fight for the GIL) per line.
                time.sleep(BATCH_DELAY_S)
            while queue:
                chunk = queue[:WRITE_LINES]
                del queue[: len(chunk)]  # the caller appends meanwhile, at the end: nothing is lost
                data = b"".join(chunk)
                del chunk
                self._queued_out += len(data)
                try:
                    while data:
                        data = data[os.write(self._fd, data) :]
                except OSError:
                    pass
            if self._stopping:
                return

    def flush(self, timeout: float) -> None:
        """Write out what is queued and stop the thread; gives up waiting after ``timeout``."""
        self._stopping = True
        self._wake.set()
        self._thread.join(max(0.0, timeout))
