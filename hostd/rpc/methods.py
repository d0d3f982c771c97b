"""What a handler is: a named method, its params struct, and a function.

Handlers never touch sockets or the wire format. They receive a :class:`CallContext`
(who is calling, the daemon's services) and their decoded params, and return the
result object of PROTOCOL.md or raise a :class:`hostd.errors.HostError`.

``inline`` handlers are plain functions run directly by the session's reader (cheap,
no I/O: ``host.log``, ``*.stream_close``); the others are coroutines run as tasks in
the session's task group. A coroutine handler may have a ``fast`` twin, a plain function
tried first that answers at once when it can (a ``stream_read`` whose piece is already
buffered) and returns :data:`NOT_READY` when the call must wait.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from hostd.rpc.messages import ParamsDecoder

if TYPE_CHECKING:
    from hostd.rpc.session import Session
    from hostd.scopes import Scope
    from hostd.services import Services

P = TypeVar("P")


class _NotReady:
    """What a ``fast`` function returns when only the coroutine handler can answer."""


NOT_READY = _NotReady()


class CallContext:
    """The caller of one request: its session, the daemon's services and its scope."""

    # A plain class, as the others here: a dataclass compiles its methods at every start.
    __slots__ = ("scope", "services", "session")

    def __init__(self, session: Session, services: Services, scope: Scope | None = None) -> None:
        self.session = session
        self.services = services
        self.scope = scope

    def __repr__(self) -> str:
        return f"CallContext(session={self.session.id!r}, plugin_id={self.plugin_id!r}, request_id={self.request_id!r})"

    @property
    def plugin_id(self) -> str:
        return self.session.plugin_id

    @property
    def request_id(self) -> str | None:
        return self.scope.request_id if self.scope is not None else None


class Held:
    """A result that holds daemon-wide bytes (a buffered ``host.http.do`` body) until its
    answer has been written to the plugin: ``release`` is called then (or when the answer
    can no longer be written), never before. Not changed once made."""

    __slots__ = ("release", "value")

    def __init__(self, value: Any, release: Callable[[], None]) -> None:
        self.value = value
        self.release = release

    def __repr__(self) -> str:
        return f"Held(value={type(self.value).__name__})"


class Method(Generic[P]):
    """One method of a table: immutable (the tables are shared by every session)."""

    __slots__ = ("counts", "decoder", "fn", "inline", "name", "now")

    name: str
    decoder: ParamsDecoder
    fn: Callable[[CallContext, P], Any] | Callable[[CallContext, P], Awaitable[Any]]
    inline: bool
    counts: bool  # counts against max_in_flight ($/cancelRequest does not)
    now: Callable[[CallContext, P], Any] | None  # run inline: the handler, or its fast twin

    def __init__(
        self,
        name: str,
        decoder: ParamsDecoder,
        fn: Callable[[CallContext, P], Any] | Callable[[CallContext, P], Awaitable[Any]],
        inline: bool = False,
        counts: bool = True,
        now: Callable[[CallContext, P], Any] | None = None,
    ) -> None:
        init = object.__setattr__
        init(self, "name", name)
        init(self, "decoder", decoder)
        init(self, "fn", fn)
        init(self, "inline", inline)
        init(self, "counts", counts)
        init(self, "now", now)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Method {self.name} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Method {self.name} is immutable")

    def __repr__(self) -> str:
        return f"Method(name={self.name!r}, inline={self.inline!r}, counts={self.counts!r})"


def host_method(
    name: str, params: type[P], what: str, *, inline: bool = False, fast: Callable[[CallContext, P], Any] | None = None
) -> Callable[[Callable[[CallContext, P], Any]], Method[P]]:
    """Declare a method: ``what`` is the label of its decode errors (``decode <what> request``)."""

    def wrap(fn: Callable[[CallContext, P], Any]) -> Method[P]:
        now = fn if inline else fast
        return Method(name=name, decoder=ParamsDecoder(params, what), fn=fn, inline=inline, now=now)

    return wrap
