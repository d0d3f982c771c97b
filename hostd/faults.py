"""Fault containment helpers: log an unexpected exception once, and the test-only fault hook.

Every owner in hostd (request, stream producer, cleanup callback, session, daemon
component) catches what escapes its children, logs it here once with its traceback, and
goes on; see ``docs/architecture.md`` for where each boundary sits.

``HOSTD_TEST_FAULTS`` is **test-only** and inert unless set: a comma-separated list of
points at which hostd raises a ``RuntimeError`` on purpose, so tests can show that each
boundary holds on a real daemon. Points: ``handler:<method>`` (that handler raises),
``producer:<kind>`` (a stream producer of kind http/model raises), ``callback:<name>``
(a session-end cleanup callback raises), ``reaper`` (the idle-stream reaper raises once),
``session:<kind>`` (the lifetime code of a plugin or control session raises as it starts),
``scan`` (the worker-thread scan of a long line raises).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from hostd.logs import Logger

_FAULTS = frozenset(p.strip() for p in os.environ.get("HOSTD_TEST_FAULTS", "").split(",") if p.strip())

FAULTS_ON = bool(_FAULTS)


class InjectedFault(RuntimeError):
    """Raised at a point named in ``HOSTD_TEST_FAULTS`` (tests only)."""


def armed(point: str) -> bool:
    return bool(_FAULTS) and point in _FAULTS


def inject(point: str) -> None:
    """Raise :class:`InjectedFault` if ``point`` is armed (a no-op in production)."""
    if _FAULTS and point in _FAULTS:
        raise InjectedFault(f"injected fault at {point}")


_fired: set[str] = set()


def inject_once(point: str) -> None:
    """:func:`inject`, the first time only (a component that is restarted then runs clean)."""
    if _FAULTS and point in _FAULTS and point not in _fired:
        _fired.add(point)
        raise InjectedFault(f"injected fault at {point}")


def log_fault(logger: Logger, what: str, exc: BaseException, **fields: Any) -> None:
    """One error line with the exception and its traceback."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    logger.error(what, error=f"{type(exc).__name__}: {exc}", traceback=tb[-8192:], **fields)


def run_callbacks(logger: Logger, callbacks: Sequence[Callable[[], object]], **fields: Any) -> None:
    """Run cleanup callbacks; one that raises is logged and the rest still run."""
    for callback in callbacks:
        try:
            callback()
        except Exception as e:
            log_fault(logger, "cleanup callback failed", e, **fields)


async def guarded(
    logger: Logger, coro: Coroutine[Any, Any, Any], on_crash: Callable[[], None] | None, **fields: Any
) -> Any:
    """The producer boundary: what ``coro`` raises is logged once, ``on_crash`` runs (it ends
    the task's stream with ``internal error``), and None is returned: the owner goes on."""
    try:
        return await coro
    except Exception as e:
        log_fault(logger, "task failed", e, **fields)
        if on_crash is not None:
            run_callbacks(logger, [on_crash], **fields)
        return None
