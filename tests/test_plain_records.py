"""The small records of the core (stream ends, methods, scopes, operations, services) are
plain classes, not dataclasses (issue 16: a dataclass compiles its methods at every start).
What callers relied on from the dataclasses still holds: defaults, value equality where it
was used, immutability of the shared ones, and reprs that never show a capability id."""

from __future__ import annotations

from typing import Any

import pytest

from hostd.operations import Operation
from hostd.rpc.methods import CallContext, Method, host_method
from hostd.rpc.registry import Registration
from hostd.scopes import Scope, ScopeRegistry
from hostd.services import Services
from hostd.streams import ABORTED, ENDED, End


def test_an_end_is_equal_by_value_and_the_shared_ones_are_distinct() -> None:
    assert End() == ENDED and End(aborted=True) == ABORTED
    assert End("boom") == End(error="boom") != End("other")
    assert ENDED != ABORTED and hash(End("x")) == hash(End("x"))
    assert repr(End("boom")) == "End(error='boom', aborted=False)"


@pytest.mark.parametrize("record", [ENDED, Registration("plugin.register", {}, None)], ids=["end", "registration"])
def test_shared_records_refuse_assignment(record: object) -> None:
    with pytest.raises(AttributeError):
        record.error = "changed"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del record.error  # type: ignore[attr-defined]


def test_a_method_is_immutable_and_keeps_its_defaults() -> None:
    @host_method("t.echo", dict, "echo", inline=True)
    def echo(ctx: CallContext, params: dict[str, object]) -> dict[str, object]:
        return params

    assert isinstance(echo, Method)
    assert (echo.name, echo.inline, echo.counts, echo.now) == ("t.echo", True, True, echo.fn)
    with pytest.raises(AttributeError, match="immutable"):
        echo.counts = False
    assert repr(echo) == "Method(name='t.echo', inline=True, counts=True)"


def test_each_scope_gets_its_own_close_list_and_its_repr_hides_the_id() -> None:
    registry = ScopeRegistry()
    a, b = registry.open("session-1", "req-1"), registry.open("session-1")
    a.on_close.append(lambda: None)
    assert b.on_close == [] and Scope(id="x", session_id="s").on_close == []
    assert a != b and a == a  # identity, as with eq=False
    assert a.id not in repr(a) and "req-1" in repr(a)


def test_an_operation_repr_hides_its_ids() -> None:
    op = Operation(id="op-secret-id", session_id="session-1", callback_id="scope-secret-id")
    assert (op.claimed, op.ended, op.cancelled, op.on_cancel) == (False, False, False, None)
    assert "secret" not in repr(op) and "session-1" in repr(op)


def test_services_get_fresh_defaults_and_a_repr_without_the_config() -> None:
    given: dict[str, Any] = dict.fromkeys(REQUIRED, "secret-config")  # not used by the defaults

    first, second = Services(**given), Services(**given)
    assert first.sessions is not second.sessions and first.operations is not second.operations
    assert first.listen == [] and first.listen is not second.listen
    assert first.end_hooks == [] and first.end_hooks is not second.end_hooks
    assert first.started_at <= second.started_at and first.bridge is None and first.config_file is None
    assert "secret" not in repr(first)


REQUIRED = (
    "config",
    "logger",
    "streams",
    "scopes",
    "counters",
    "emit",
    "output_budget",
    "input_budget",
    "request_budget",
    "scan_budget",
)
