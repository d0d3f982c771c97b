"""The live sessions of one daemon, and the plugin ids they hold.

Handlers see sessions only through this registry: ``by_plugin`` finds the one session
that holds an id (``hostd.invoke``), ``claim`` gives a session an id only while no other
live session holds it (PROTOCOL §4), and an id is released when its session's input
ends, so a restarted plugin can take it at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hostd.errors import Forbidden, InvalidParams

if TYPE_CHECKING:
    from hostd.rpc.session import Session

PLUGIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Registration:
    """The last successful ``plugin.register``/``plugin.reconfigure`` of a plugin id.

    Immutable (replaced whole by the next one). Its repr names the method only: params and
    result are the plugin's configuration. (A plain class: a dataclass compiles its methods
    at every start.)"""

    __slots__ = ("method", "params", "result")

    method: str
    params: dict[str, Any]
    result: Any

    def __init__(self, method: str, params: dict[str, Any], result: Any) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "result", result)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Registration is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Registration is immutable")

    def __repr__(self) -> str:
        return f"Registration(method={self.method!r})"


class SessionRegistry:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._by_plugin: dict[str, Session] = {}
        self._seq = 0
        # Plugin ids whose process is being restarted (invokes get plugin_unavailable).
        self.unavailable: set[str] = set()
        self.registrations: dict[str, Registration] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def next_id(self) -> str:
        self._seq += 1
        return f"session-{self._seq}"

    def add(self, session: Session) -> None:
        self._sessions[session.id] = session

    def remove(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        self.release(session)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def by_plugin(self, plugin_id: str) -> Session | None:
        """The live plugin session holding ``plugin_id``, if any."""
        return self._by_plugin.get(plugin_id)

    def claim(self, session: Session, plugin_id: str) -> None:
        """Give ``session`` the id ``plugin_id`` (trimmed, validated, unique while connected)."""
        plugin_id = plugin_id.strip()
        if not PLUGIN_ID.fullmatch(plugin_id):
            raise InvalidParams("invalid plugin id")
        if session.fixed_name and plugin_id != session.fixed_name:
            raise Forbidden(f"plugin id is fixed to {session.fixed_name}")
        holder = self._by_plugin.get(plugin_id)
        if holder is not None and holder is not session:
            raise Forbidden(f"plugin id {plugin_id} is already connected")
        if self._by_plugin.get(session.plugin_id) is session:
            del self._by_plugin[session.plugin_id]
        session.plugin_id = plugin_id
        self._by_plugin[plugin_id] = session

    def hold_fixed(self, session: Session) -> None:
        """A session started with ``--name`` holds its id from the start (if it is free)."""
        if session.fixed_name and session.fixed_name not in self._by_plugin:
            self._by_plugin[session.fixed_name] = session

    def record_registration(self, plugin_id: str, method: str, params: dict[str, Any], result: Any) -> None:
        """Kept per plugin id (not per session): a restarted plugin is registered again with it."""
        self.registrations[plugin_id] = Registration(method, params, result)

    def release(self, session: Session) -> None:
        if self._by_plugin.get(session.plugin_id) is session:
            del self._by_plugin[session.plugin_id]
