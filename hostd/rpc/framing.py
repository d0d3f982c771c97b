"""Newline framing with a hard cap on line length.

Only newly arrived bytes are searched for ``\\n`` (rescanning a growing buffer would make
a 16 MiB line quadratic). A line over the cap is dropped up to its newline and reported
once as ``None`` so the session can answer ``message too large`` and carry on.
"""

from __future__ import annotations


class LineFramer:
    __slots__ = ("_buf", "_discarding", "max_line")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False

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
        if self._buf:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._append(data, start, end, out)
                return out
            if len(self._buf) + (nl - start) > self.max_line:
                out.append(None)
            else:
                self._buf += data[start:nl]
                out.append(bytes(self._buf))
            self._buf.clear()
            start = nl + 1
        find = data.find
        max_line = self.max_line
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            if nl - start > max_line:
                out.append(None)
            else:
                out.append(data[start:nl])
            start = nl + 1
        if start < end:
            self._append(data, start, end, out)
        return out

    def _append(self, data: bytes, start: int, end: int, out: list[bytes | None]) -> None:
        if len(self._buf) + (end - start) > self.max_line:
            self._buf.clear()
            self._discarding = True
            out.append(None)
        else:
            self._buf += data[start:end]
