"""Callback scopes: the ``host_callback_id``s hostd issues when the host side invokes a plugin.

A scope is bound to one session, carries the host's request id for log lines, and runs
its close callbacks (closing the model streams opened under it) when it ends. Ids are
random 128-bit values: a plugin cannot guess another plugin's scope.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from hostd.errors import Forbidden


@dataclass(eq=False, slots=True)
class Scope:
    id: str
    session_id: str
    request_id: str | None = None
    # The invoker's own host_callback_id (the proxy's, through the bridge), kept to map back.
    invoker_callback_id: object = None
    closed: bool = False
    on_close: list[Callable[[], None]] = field(default_factory=list)


class ScopeRegistry:
    """Open scopes by id. Owned by the daemon; sessions only look scopes up."""

    def __init__(self) -> None:
        self._scopes: dict[str, Scope] = {}

    def __len__(self) -> int:
        return len(self._scopes)

    def open(self, session_id: str, request_id: str | None = None) -> Scope:
        scope = Scope(id=os.urandom(16).hex(), session_id=session_id, request_id=request_id)
        self._scopes[scope.id] = scope
        return scope

    def lookup(self, scope_id: str, session_id: str) -> Scope | None:
        """The open scope ``scope_id`` for a call from ``session_id``.

        ``None`` when it is not open (never issued, or ended); :class:`Forbidden` when it
        is open but bound to another session.
        """
        scope = self._scopes.get(scope_id)  # compared exactly as sent (PROTOCOL §3)
        if scope is None:
            return None
        if scope.session_id != session_id:
            raise Forbidden("host callback ID does not belong to the calling plugin")
        return scope

    def close(self, scope: Scope) -> None:
        """End ``scope`` and run its close callbacks once."""
        if scope.closed:
            return
        scope.closed = True
        self._scopes.pop(scope.id, None)
        callbacks, scope.on_close = scope.on_close, []
        for callback in callbacks:
            callback()

    def close_session(self, session_id: str) -> None:
        for scope in [s for s in self._scopes.values() if s.session_id == session_id]:
            self.close(scope)
