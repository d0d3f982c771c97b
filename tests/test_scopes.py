"""ScopeRegistry on its own: issuing, ownership, ending and close callbacks (PROTOCOL.md §7)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from hostd.errors import Forbidden
from hostd.scopes import ScopeRegistry


def test_open_issues_unguessable_distinct_ids_bound_to_the_session() -> None:
    registry = ScopeRegistry()
    scopes = [registry.open("session-1") for _ in range(100)]
    assert len({s.id for s in scopes}) == 100
    assert all(re.fullmatch(r"[0-9a-f]{32}", s.id) for s in scopes)
    assert all(s.session_id == "session-1" and not s.closed for s in scopes)
    assert len(registry) == 100


def test_open_keeps_the_request_id() -> None:
    registry = ScopeRegistry()
    assert registry.open("session-1", "req-42").request_id == "req-42"
    assert registry.open("session-1").request_id is None


def test_lookup_from_the_owning_session_returns_the_scope() -> None:
    registry = ScopeRegistry()
    scope = registry.open("session-1")
    assert registry.lookup(scope.id, "session-1") is scope
    assert registry.lookup(f"  {scope.id}\n", "session-1") is None  # compared exactly as sent (§3)


def test_lookup_of_an_id_never_issued_is_none() -> None:
    registry = ScopeRegistry()
    registry.open("session-1")
    assert registry.lookup("0" * 32, "session-1") is None
    assert registry.lookup("", "session-1") is None


def test_lookup_from_another_session_is_forbidden() -> None:
    registry = ScopeRegistry()
    scope = registry.open("session-1")
    with pytest.raises(Forbidden) as e:
        registry.lookup(scope.id, "session-2")
    assert e.value.message == "host callback ID does not belong to the calling plugin"
    assert e.value.to_error() == {
        "code": -32002,
        "message": "host callback ID does not belong to the calling plugin",
        "data": {"code": "forbidden"},
    }


def test_an_ended_scope_is_not_open_for_any_session() -> None:
    registry = ScopeRegistry()
    scope = registry.open("session-1")
    registry.close(scope)
    assert scope.closed
    assert registry.lookup(scope.id, "session-1") is None
    assert registry.lookup(scope.id, "session-2") is None  # not Forbidden: simply not open
    assert len(registry) == 0


def test_close_runs_the_callbacks_once_in_order() -> None:
    registry = ScopeRegistry()
    scope = registry.open("session-1")
    ran: list[str] = []
    scope.on_close.append(lambda: ran.append("first"))
    scope.on_close.append(lambda: ran.append("second"))
    registry.close(scope)
    registry.close(scope)
    assert ran == ["first", "second"]
    assert scope.on_close == []


def test_a_callback_may_unregister_itself_while_the_scope_closes() -> None:
    # Model streams remove their callback when they close, also when the scope closes them.
    registry = ScopeRegistry()
    scope = registry.open("session-1")
    ran: list[int] = []

    def callback() -> None:
        ran.append(1)
        with pytest.raises(ValueError):
            scope.on_close.remove(callback)  # already taken off the list

    scope.on_close.append(callback)
    registry.close(scope)
    assert ran == [1]


def test_a_removed_callback_does_not_run() -> None:
    registry = ScopeRegistry()
    scope = registry.open("session-1")
    ran: list[str] = []

    def callback() -> None:
        ran.append("ran")

    scope.on_close.append(callback)
    scope.on_close.remove(callback)
    registry.close(scope)
    assert ran == []


def test_close_session_ends_only_that_sessions_scopes() -> None:
    registry = ScopeRegistry()
    mine = [registry.open("session-1") for _ in range(3)]
    theirs = registry.open("session-2")
    ended: list[str] = []

    def recorder(scope_id: str) -> Callable[[], None]:
        return lambda: ended.append(scope_id)

    for scope in [*mine, theirs]:
        scope.on_close.append(recorder(scope.id))
    registry.close_session("session-1")
    assert sorted(ended) == sorted(s.id for s in mine)
    assert all(s.closed for s in mine)
    assert not theirs.closed
    assert registry.lookup(theirs.id, "session-2") is theirs
    assert len(registry) == 1


def test_close_session_without_scopes_is_a_no_op() -> None:
    registry = ScopeRegistry()
    scope = registry.open("session-1")
    registry.close_session("session-9")
    assert registry.lookup(scope.id, "session-1") is scope
