"""Newline framing with a hard cap on line length.

Only newly arrived bytes are searched for ``\\n`` (rescanning a growing buffer would make
a 16 MiB line quadratic), and a partial line is kept as the chunks that brought it, joined
once when its newline arrives (growing one buffer copied it again at every reallocation:
~30 ms of a 16 MiB line). A line over the cap is dropped up to its newline and reported
once as ``None`` so the session can answer ``message too large`` and carry on; a trailing
``\\r`` does not count towards the cap.

Answers (a plugin answering an invoke, a worker, the bridge relaying a host call) may be
longer than requests: a line whose first bytes look like an answer may grow to
``max_answer`` instead. That look is only an allowance for buffering; the session checks
the complete line again (a request over ``max_line`` is refused whatever it looked like).
"""

from __future__ import annotations

_PEEK = 4096


def looks_like_answer(head: bytes | bytearray) -> bool:
    """Might this line be an answer? (Only an allowance: the dispatcher refuses a request over
    ``max_line`` whatever this said.)"""
    head = head[:_PEEK]
    return b'"result"' in head or b'"error"' in head


class LineFramer:
    __slots__ = ("_cap", "_discarding", "_parts", "_size", "max_answer", "max_line")

    def __init__(self, max_line: int, max_answer: int | None = None) -> None:
        self.max_line = max_line
        self.max_answer = max(max_answer or max_line, max_line)
        self._parts: list[bytes] = []  # the partial line, as it arrived
        self._size = 0
        self._cap = max_line  # the cap of the partial line in _parts
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of a partial line held until its newline arrives."""
        return self._size

    def _clear(self) -> None:
        self._parts = []
        self._size = 0
        self._cap = self.max_line

    def _over(self, line: bytes | bytearray, length: int) -> bool:
        """Is the complete ``line`` (``length`` bytes) over its cap? A trailing ``\r`` is not counted."""
        if line[-1:] == b"\r":
            length -= 1
        if length <= self.max_line:
            return False
        if length > self.max_answer:
            return True
        return not looks_like_answer(line)

    def feed(self, data: bytes) -> list[bytes | None]:
        """Split ``data`` into complete lines; ``None`` marks a line that was too long."""
        out: list[bytes | None] = []
        start = 0
        end = len(data)
        if self._discarding:
            nl = data.find(b"\n")
            if nl < 0:
                return out
            self._discarding = False
            start = nl + 1
        if self._size:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._append(data, start, end, out)
                return out
            self._parts.append(data[start:nl])
            line = b"".join(self._parts)
            self._clear()
            out.append(None if self._over(line, len(line)) else line)
            start = nl + 1
        find = data.find
        max_line = self.max_line
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            if nl - start > max_line and self._over(data[start:nl], nl - start):
                out.append(None)
            else:
                out.append(data[start:nl])
            start = nl + 1
        if start < end:
            self._append(data, start, end, out)
        return out

    def _head(self, more: bytes) -> bytes:
        """The first ``_PEEK`` bytes of the partial line followed by ``more``."""
        head = b""
        for part in (*self._parts, more):
            head += part[: _PEEK - len(head)]
            if len(head) >= _PEEK:
                break
        return head

    def _append(self, data: bytes, start: int, end: int, out: list[bytes | None]) -> None:
        if start == end:
            return
        size = self._size + (end - start)
        if size > self.max_line + 1:  # +1: a trailing \r may still come
            cap = self._cap
            if cap == self.max_line:  # not decided yet: decide on the first _PEEK bytes, as feed() does
                head = self._head(data[start : start + _PEEK])
                if len(head) < _PEEK:
                    cap = self.max_answer + 1  # fewer than _PEEK bytes so far: decide when more arrive
                else:
                    cap = self._cap = (self.max_answer if looks_like_answer(head) else self.max_line) + 1
            if size > cap:
                self._clear()
                self._discarding = True
                out.append(None)
                return
        self._parts.append(data[start:end] if start or end < len(data) else data)
        self._size = size
