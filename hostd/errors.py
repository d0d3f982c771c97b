"""Every error that reaches a peer as a JSON-RPC error object, drawn once::

    WireError                    code, data.code, message; ``to_error()`` builds the object
    ├── ProtocolError            raised only by ``hostd.rpc`` (the session's own decisions)
    │   ├── ParseError           -32700 parse_error       the line is not JSON
    │   ├── InvalidRequest       -32600 invalid_request   not a request, line too large, batch too large
    │   ├── MethodNotFound       -32601 method_not_found
    │   └── RequestCancelled     -32800 request_cancelled  ``$/cancelRequest``
    ├── HostError                raised by handlers (never constructed bare)
    │   ├── InvalidParams        -32602 invalid_params     ``decode <what> request: …``
    │   ├── HostCallFailed       -32000 host_call_failed   the method ran and failed (Go texts)
    │   │   └── RemoteError      -32000…                  a peer's error object, passed on unchanged
    │   ├── LimitExceeded        -32001 limit_exceeded
    │   └── Forbidden            -32002 forbidden
    └── InternalError            -32603 internal_error     a bug in hostd, never bad input

Only ``hostd.rpc.dispatch`` turns exceptions into wire errors: a ``WireError`` as itself,
anything else as :class:`InternalError` (logged once with its traceback). Each upstream
translates its library's exceptions into ``HostError``s in one function of its own.
Messages are for people and for plugins that match on them (PROTOCOL.md quotes the Go
texts); never put a secret in one.
"""

from __future__ import annotations

from typing import Any


class WireError(Exception):
    """Base of every error that becomes a JSON-RPC error object."""

    code: int = -32000
    data_code: str = "host_call_failed"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        retryable: bool | None = None,
        data_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.retryable = retryable
        if data_code is not None:
            self.data_code = data_code

    def to_error(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member for this exception."""
        data: dict[str, Any] = {"code": self.data_code}
        if self.http_status is not None and 400 <= self.http_status <= 599:
            data["http_status"] = self.http_status
        if self.retryable is not None:
            data["retryable"] = self.retryable
        return {"code": self.code, "message": self.message, "data": data}


# The session's own decisions ----------------------------------------------------------


class ProtocolError(WireError):
    """An envelope-level failure; only ``hostd.rpc`` raises these."""


class ParseError(ProtocolError):
    code = -32700
    data_code = "parse_error"


class InvalidRequest(ProtocolError):
    code = -32600
    data_code = "invalid_request"


class MethodNotFound(ProtocolError):
    code = -32601
    data_code = "method_not_found"


class RequestCancelled(ProtocolError):
    code = -32800
    data_code = "request_cancelled"


# What handlers raise ------------------------------------------------------------------


class HostError(WireError):
    """A handler's failure; use one of the subclasses."""


class InvalidParams(HostError):
    code = -32602
    data_code = "invalid_params"


class HostCallFailed(HostError):
    code = -32000
    data_code = "host_call_failed"


class LimitExceeded(HostError):
    code = -32001
    data_code = "limit_exceeded"


class Forbidden(HostError):
    code = -32002
    data_code = "forbidden"


class RemoteError(HostCallFailed):
    """An error object received from a peer (a plugin answering an invoke), passed on unchanged."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "")))
        self.error = error
        code = error.get("code")
        self.code = code if isinstance(code, int) else -32000
        data = error.get("data")
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            self.data_code = data["code"]

    def to_error(self) -> dict[str, Any]:
        return self.error


# A bug ---------------------------------------------------------------------------------


class InternalError(WireError):
    """A bug in hostd while handling one request (PROTOCOL §4 fault containment)."""

    code = -32603
    data_code = "internal_error"
