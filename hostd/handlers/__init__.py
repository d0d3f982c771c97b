"""One module per method family; this module collects them into the two method tables.

A reader who sees ``host.auth.save`` in a log opens ``handlers/auth.py``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from hostd.handlers import affinity as _affinity
from hostd.handlers import auth as _auth
from hostd.handlers import control as _control
from hostd.handlers import hostd as _hostd
from hostd.handlers import http as _http
from hostd.handlers import log as _log
from hostd.handlers import model as _model
from hostd.handlers import stream as _stream
from hostd.rpc.methods import Method


def _table(*families: tuple[Method[Any], ...]) -> MappingProxyType[str, Method[Any]]:
    table: dict[str, Method[Any]] = {}
    for family in families:
        for method in family:
            assert method.name not in table, method.name
            table[method.name] = method
    return MappingProxyType(table)


def plugin_methods() -> MappingProxyType[str, Method[Any]]:
    """Methods a plugin session serves (``$/cancelRequest`` is handled by the session)."""
    return _table(
        _hostd.METHODS, _http.METHODS, _model.METHODS, _auth.METHODS, _stream.METHODS, _log.METHODS, _affinity.METHODS
    )


def control_methods() -> MappingProxyType[str, Method[Any]]:
    """Methods the control session serves."""
    return _table(_control.METHODS)
