"""Byte budgets shared by every session of the daemon (PROTOCOL §11).

One kind of counter for each daemon-wide limit: partial lines held by the framers
(``limits.max_total_input_bytes``), answers and emit chunks waiting for their readers
(``max_total_output_bytes``), and requests being served by a task
(``max_total_request_bytes``). Each owner adds what it holds and takes it back when it
lets go; what happens past the limit is the owner's rule (close the session holding the
longest partial line, or refuse new calls ``-32001`` until the budget drains).
"""

from __future__ import annotations


class Budget:
    """Bytes held across all sessions against one limit."""

    __slots__ = ("limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0

    @property
    def full(self) -> bool:
        return self.total > self.limit
