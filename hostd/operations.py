"""HTTP operations: ``host.http.operation_open`` / ``host.http.cancel`` (PROTOCOL.md §13).

An operation is a cancel handle a plugin takes before it sends a request: it opens one,
passes its ``operation_id`` to ``host.http.do`` or ``do_stream`` (which claims it), and may
cancel it from another call at any moment. It is single-use, belongs to the session that
opened it (another session's id behaves as an unknown one), and ends at the first of: its
call finishing (for ``do_stream``: its stream ending, failing or being closed), a cancel,
the end of the scope it was opened under, the end of its session.

The registry only keeps state and runs the effect of a cancel for the phase the operation
is in; the HTTP handler words the errors (``context canceled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from hostd.errors import HostCallFailed, LimitExceeded

if TYPE_CHECKING:
    from hostd.scopes import Scope

CANCELED = "context canceled"  # Go's context.Canceled text, which plugins match on


class Operation:
    """One operation. Compared by identity; its repr leaves out the ids (the operation id
    and the scope's are capabilities of the plugin). (A plain class: a dataclass compiles
    its methods at every start.)"""

    __slots__ = (
        "_scope",
        "_scope_hook",
        "callback_id",
        "cancelled",
        "claimed",
        "ended",
        "id",
        "on_cancel",
        "session_id",
    )

    def __init__(
        self,
        id: str,
        session_id: str,
        callback_id: str,
        claimed: bool = False,
        ended: bool = False,
        cancelled: bool = False,
        on_cancel: Callable[[], None] | None = None,
        _scope: Scope | None = None,
        _scope_hook: Callable[[], None] | None = None,
    ) -> None:
        self.id = id
        self.session_id = session_id
        self.callback_id = callback_id  # as the opening call sent it: claims compare it exactly
        self.claimed = claimed
        self.ended = ended
        self.cancelled = cancelled
        # While claimed: what a cancel does now (cancel the call's task, close its stream).
        self.on_cancel = on_cancel
        self._scope = _scope
        self._scope_hook = _scope_hook

    def __repr__(self) -> str:
        return (
            f"Operation(session_id={self.session_id!r}, claimed={self.claimed!r},"
            f" ended={self.ended!r}, cancelled={self.cancelled!r})"
        )


def go_quote(text: str) -> str:
    """``text`` as Go's ``%q`` (``strconv.Quote``) writes it."""
    out = ['"']
    for c in text:
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif c in _GO_ESCAPES:
            out.append(_GO_ESCAPES[c])
        elif c.isprintable():
            out.append(c)
        elif ord(c) < 0x80:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) <= 0xFFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


class OperationRegistry:
    """Open operations by id. Owned by the daemon; each operation belongs to one session."""

    def __init__(self) -> None:
        self._ops: dict[str, Operation] = {}
        self._unclaimed: dict[str, int] = {}  # session id -> unclaimed operations

    def __len__(self) -> int:
        return len(self._ops)

    def open(self, session_id: str, callback_id: str, scope: Scope | None, *, limit: int) -> Operation:
        """A new operation for ``session_id`` (-32001 past ``limit`` unclaimed ones)."""
        if self._unclaimed.get(session_id, 0) >= limit:
            raise LimitExceeded(f"too many unclaimed http operations (max {limit})")
        op = Operation(id=os.urandom(16).hex(), session_id=session_id, callback_id=callback_id)
        self._ops[op.id] = op
        self._unclaimed[session_id] = self._unclaimed.get(session_id, 0) + 1
        if scope is not None:
            op._scope = scope
            op._scope_hook = lambda: self.cancel_op(op)
            scope.on_close.append(op._scope_hook)
        return op

    def claim(self, operation_id: str, session_id: str, callback_id: str) -> Operation:
        """Take ``operation_id`` for a call of ``session_id`` carrying ``callback_id``."""
        op = self._ops.get(operation_id)
        if op is None or op.claimed or op.session_id != session_id or op.callback_id != callback_id:
            raise HostCallFailed(f"host http operation {go_quote(operation_id)} is not open")
        op.claimed = True
        self._count_claimed(op)
        return op

    def cancel(self, operation_id: str, session_id: str) -> None:
        """``host.http.cancel``: unknown, foreign and ended ids are a no-op."""
        op = self._ops.get(operation_id)
        if op is not None and op.session_id == session_id:
            self.cancel_op(op)

    def cancel_op(self, op: Operation) -> None:
        if op.ended:
            return
        op.cancelled = True
        action = op.on_cancel
        self.finish(op)
        if action is not None:
            action()

    def finish(self, op: Operation) -> None:
        """The operation is over (its call ended, or it was cancelled). Idempotent."""
        if op.ended:
            return
        op.ended = True
        op.on_cancel = None
        self._ops.pop(op.id, None)
        if not op.claimed:
            self._count_claimed(op)
        scope, hook = op._scope, op._scope_hook
        op._scope = op._scope_hook = None
        if scope is not None and hook is not None:
            # Forget the hook, so a long scope does not keep every ended operation alive.
            with contextlib.suppress(ValueError):  # already run: the scope is ending
                scope.on_close.remove(hook)

    def close_session(self, session_id: str) -> None:
        """The session ended: every operation it holds ends with it."""
        for op in [o for o in self._ops.values() if o.session_id == session_id]:
            self.cancel_op(op)
        self._unclaimed.pop(session_id, None)

    def _count_claimed(self, op: Operation) -> None:
        left = self._unclaimed.get(op.session_id, 0) - 1
        if left > 0:
            self._unclaimed[op.session_id] = left
        else:
            self._unclaimed.pop(op.session_id, None)


def cancel_task(task: asyncio.Task[object]) -> Callable[[], None]:
    """The cancel action for a call in flight: cancel its task (the handler words the error)."""

    def cancel() -> None:
        with contextlib.suppress(RuntimeError):
            task.cancel()

    return cancel
