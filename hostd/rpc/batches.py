"""One JSON-RPC batch's answers, collected and written as one array when its last element ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hostd.rpc.outbox import Outbox


class Batch:
    __slots__ = ("_held", "_outbox", "parts", "pending")

    def __init__(self, outbox: Outbox, pending: int) -> None:
        self.pending = pending
        self.parts: list[bytes] = []
        self._outbox = outbox  # written with a flush of its own: the last element may end late
        self._held: list[Callable[[], None]] = []

    def add(self, answer: bytes) -> None:
        self.parts.append(answer)

    def hold(self, release: Callable[[], None]) -> None:
        """``release`` once the array holding this element's answer has been written."""
        self._held.append(release)

    def done_one(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            if self.parts:
                self._outbox.write(b"[" + b",".join(self.parts) + b"]")
            for release in self._held:
                self._outbox.after_written(release)
