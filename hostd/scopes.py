"""Callback scopes: the ``host_callback_id``s hostd issues when the host side invokes a plugin.

A scope is bound to one session, carries the host's request id for log lines, and runs
its close callbacks (closing the model streams opened under it) when it ends. Ids are
random 128-bit values: a plugin cannot guess another plugin's scope.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hostd.errors import Forbidden


class Scope:
    """One open (or ended) callback scope. Compared by identity; its repr leaves out the id,
    a capability of the plugin it was issued to. (A plain class: a dataclass compiles its
    methods at every start.)"""

    __slots__ = ("closed", "id", "invoker_callback_id", "on_close", "request_id", "session_id")

    def __init__(
        self,
        id: str,
        session_id: str,
        request_id: str | None = None,
        invoker_callback_id: object = None,
        closed: bool = False,
        on_close: list[Callable[[], None]] | None = None,
    ) -> None:
        self.id = id
        self.session_id = session_id
        self.request_id = request_id
        # The invoker's own host_callback_id (the proxy's, through the bridge), kept to map back.
        self.invoker_callback_id = invoker_callback_id
        self.closed = closed
        self.on_close: list[Callable[[], None]] = [] if on_close is None else on_close

    def __repr__(self) -> str:
        return (
            f"Scope(session_id={self.session_id!r}, request_id={self.request_id!r},"
            f" closed={self.closed!r}, on_close={len(self.on_close)})"
        )


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
