"""The error hierarchy every handler raises and only the session turns into wire errors.

Each class knows its JSON-RPC code and its ``data.code``. Messages are for people and
for plugins that match on them (PROTOCOL.md quotes the Go texts); never put a secret in one.
"""

from __future__ import annotations

from typing import Any


class HostError(Exception):
    """Base of every error that reaches a plugin as a JSON-RPC error object."""

    code: int = -32000
    data_code: str = "host_call_failed"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.retryable = retryable

    def to_error(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member for this exception."""
        data: dict[str, Any] = {"code": self.data_code}
        if self.http_status is not None and 400 <= self.http_status <= 599:
            data["http_status"] = self.http_status
        if self.retryable is not None:
            data["retryable"] = self.retryable
        return {"code": self.code, "message": self.message, "data": data}


class ParseError(HostError):
    code = -32700
    data_code = "parse_error"


class InvalidRequest(HostError):
    code = -32600
    data_code = "invalid_request"


class MethodNotFound(HostError):
    code = -32601
    data_code = "method_not_found"


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


class RequestCancelled(HostError):
    code = -32800
    data_code = "request_cancelled"


class RemoteError(HostError):
    """An error object received from a peer, passed on unchanged (``hostd.invoke``)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "")))
        self.error = error
        code = error.get("code")
        self.code = code if isinstance(code, int) else -32000

    def to_error(self) -> dict[str, Any]:
        return self.error
