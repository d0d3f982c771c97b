"""Relayed ``host.*`` calls: under ``hostd bridge``, the families named in ``relay`` are served
by the proxy itself, through the bridge (PROTOCOL §15 "Relay").

A relayed method keeps the plugin's params bytes (only ``host_callback_id`` changes) and sends
them to the bridge's control session as a request of the same name; the answer's result is
passed back unchanged, an error as the bridge gave it. §7's scope checks run first, on
hostd's scope id: a foreign scope is refused (-32002) by the dispatcher, and a scope that is
not open is refused or dropped as §7 says, before anything reaches the proxy. An open
scope is replaced by the proxy's own id that hostd kept on it (or removed when the proxy
sent none). Stream ids the proxy returns are remembered so that the plugin's session ending
closes them in the proxy too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import orjson

from hostd.bridge.spec import family_of
from hostd.errors import Forbidden, HostCallFailed, InvalidParams
from hostd.rpc.messages import fragment
from hostd.rpc.methods import CallContext, Method

if TYPE_CHECKING:
    from hostd.rpc.session import Session

# Stream-opening methods and the method that closes what they opened.
STREAM_CLOSE = {"host.http.do_stream": "host.http.stream_close", "host.model.execute_stream": "host.model.stream_close"}
_NOT_OPEN_REFUSED = frozenset({"host.http.do", "host.http.do_stream", "host.http.operation_open"})


class RelayTarget(Protocol):
    """The bridge's end (``hostd.bridge.host.BridgeHost``)."""

    timeout_s: float

    async def relay(self, method: str, params: dict[str, Any]) -> Any: ...

    def opened(self, session: Session, close_method: str, stream_id: str) -> None: ...

    def closed(self, session: Session, close_method: str, stream_id: str) -> None: ...


class RelayParams(msgspec.Struct, frozen=True):
    raw: bytes
    host_callback_id: str = ""


class _Probe(msgspec.Struct):
    host_callback_id: Any = None


_probe = msgspec.json.Decoder(_Probe).decode


# Methods whose host_callback_id only names the caller: never scope-checked (§7).
_UNCHECKED = frozenset({"host.http.cancel"})


class _RelayDecoder:
    """Keeps the params bytes; reads only ``host_callback_id`` (for the dispatcher's scope lookup)."""

    __slots__ = ("checked", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.checked = what not in _UNCHECKED

    def exact(self, raw: Any) -> RelayParams:
        data = bytes(raw)
        callback_id = _probe(data).host_callback_id
        if not self.checked or not isinstance(callback_id, str):
            callback_id = ""
        return RelayParams(data, callback_id)

    recover = exact
    decode = exact

    def empty(self) -> RelayParams:
        return RelayParams(b"{}")

    def error(self, e: msgspec.DecodeError) -> InvalidParams:
        if str(e).startswith("Expected `object`"):
            return InvalidParams("params must be an object")
        return InvalidParams(f"decode {self.what} request: {e}")


def relay_method(name: str, target: RelayTarget) -> Method[RelayParams]:
    close_of = STREAM_CLOSE.get(name)
    opens = {v: k for k, v in STREAM_CLOSE.items()}.get(name)

    async def relay(ctx: CallContext, p: RelayParams) -> Any:
        params = orjson.loads(p.raw)
        if not isinstance(params, dict):
            raise InvalidParams("params must be an object")
        if name in _UNCHECKED and isinstance(params.get("host_callback_id"), str):
            # Only identifies the caller: the proxy's id when the scope is this session's, else none.
            try:
                found = ctx.services.scopes.lookup(params["host_callback_id"], ctx.session.id)
            except Forbidden:
                found = None
            proxy_id = found.invoker_callback_id if found is not None else None
            if isinstance(proxy_id, str) and proxy_id:
                params["host_callback_id"] = proxy_id
            else:
                del params["host_callback_id"]
        elif p.host_callback_id:
            scope = ctx.scope
            if scope is None or scope.closed:
                if name in _NOT_OPEN_REFUSED and not params.get("operation_id"):
                    raise HostCallFailed("host callback ID is not open")
                del params["host_callback_id"]
            elif isinstance(scope.invoker_callback_id, str) and scope.invoker_callback_id:
                params["host_callback_id"] = scope.invoker_callback_id
            else:
                del params["host_callback_id"]
        result = await target.relay(name, params)
        raw = bytes(result) if result else b"{}"
        if close_of is not None and b'"stream_id"' in raw:
            stream_id = orjson.loads(raw).get("stream_id")
            if isinstance(stream_id, str) and stream_id:
                target.opened(ctx.session, close_of, stream_id)
        elif opens is not None and isinstance(params.get("stream_id"), str):
            target.closed(ctx.session, name, params["stream_id"])
        return fragment(raw)

    return Method(name=name, decoder=_RelayDecoder(name), fn=relay)  # type: ignore[arg-type]


RELAYED_ONLY = ("host.routing.reset_cooldown",)  # served only when relayed (standalone: -32601)


def relay_table(
    table: Mapping[str, Method[Any]], families: frozenset[str], target: RelayTarget
) -> dict[str, Method[Any]]:
    """``table`` with every method of a relayed family replaced by its relay."""
    out = dict(table)
    for name in [*table, *RELAYED_ONLY]:
        if family_of(name) in families:  # host.stream.* has no family: never relayed
            out[name] = relay_method(name, target)
    return out
