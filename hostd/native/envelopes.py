"""The proxy's envelopes, both ways, as PROTOCOL §14 maps them (for the native worker).

- host → plugin: the plugin's ``call`` outcome (rc and ``{"ok", "result" | "error"}``) becomes a
  JSON-RPC :class:`Answer` (:func:`plugin_answer`);
- plugin → host: a JSON-RPC error from hostd becomes the ``host_call_failed`` envelope the proxy
  hands a plugin (:func:`host_error_envelope`); a success is ``OK_PREFIX + result + "}"``.

Pure functions only: this module never does I/O, never calls into the plugin and never imports
hostd's daemon modules (it is part of the standard-library-only worker).
"""

from __future__ import annotations

import json
from typing import Any

from hostd.native.rawjson import folded, go_string, one_line, parse_object

OK_PREFIX = b'{"ok":true,"result":'
OK_SUFFIX = b"}"


def host_error_envelope(message: str) -> bytes:
    """The envelope the proxy hands a plugin for a failed host call."""
    return ('{"ok":false,"error":{"code":"host_call_failed","message":' + go_string(message) + "}}").encode()


class Answer:
    """A JSON-RPC outcome: ``result`` (raw JSON text) or ``error`` (code, message, data)."""

    __slots__ = ("data", "error_code", "message", "result")

    def __init__(
        self, result: str | None = None, message: str = "", data: dict[str, Any] | None = None, code: int = -32000
    ) -> None:
        self.result = result
        self.error_code = code
        self.message = message
        self.data = data

    def line(self, id_raw: str) -> bytes:
        if self.result is not None:
            return ('{"jsonrpc":"2.0","id":' + id_raw + ',"result":' + self.result + "}\n").encode()
        error = {"code": self.error_code, "message": self.message, "data": self.data or {"code": "host_call_failed"}}
        return (
            '{"jsonrpc":"2.0","id":'
            + id_raw
            + ',"error":'
            + json.dumps(error, ensure_ascii=False, separators=(",", ":"))
            + "}\n"
        ).encode()

    def __repr__(self) -> str:
        if self.result is not None:
            return f"Answer(result={self.result!r})"
        return f"Answer(message={self.message!r}, data={self.data!r})"


def _failed(message: str) -> Answer:
    return Answer(message=message, data={"code": "host_call_failed"})


def _error_envelope_answer(error: Any) -> Answer | None:
    """-32000 from ``{"ok": false, "error": {...}}``; None when the error object has the wrong types."""
    if error is None:
        return _failed("plugin call failed")
    if not isinstance(error, dict):
        return None
    fields = {key.lower(): value for key, value in error.items()}
    code = fields.get("code", "")
    message = fields.get("message", "")
    status = fields.get("http_status", 0)
    retryable = fields.get("retryable", False)
    if not isinstance(code, str) or not isinstance(message, str) or not isinstance(retryable, bool):
        return None
    if isinstance(status, bool) or not isinstance(status, int):
        return None
    message = message.strip() or "plugin call failed"
    data: dict[str, Any] = {"code": code or "host_call_failed"}
    if 400 <= status <= 599:
        data["http_status"] = status
    if retryable:
        data["retryable"] = True
    return Answer(message=message, data=data)


def plugin_answer(method: str, rc: int, out: bytes) -> Answer:
    """Map the plugin's ``call`` outcome to the JSON-RPC answer exactly as PROTOCOL §14 lists it."""
    text = out.decode("utf-8", "replace")
    members = parse_object(text) if out else None
    if rc != 0:
        if members is not None:
            fields = folded(members)
            ok = fields.get("ok", (False, ""))[0]
            error = fields.get("error", (None, ""))[0]
            if ok is False and isinstance(error, dict):
                answer = _error_envelope_answer(error)
                if answer is not None:
                    return answer
        return _failed(f"plugin call {method} returned {rc}: {text}")
    if not out:
        return _failed(f"empty plugin response for {method}")
    if members is None:
        if text.strip() == "null":  # Go decodes null into a zero envelope: not ok, no error
            return _failed("plugin call failed")
        return _failed(f"invalid plugin response for {method}")
    fields = folded(members)
    ok, _ = fields.get("ok", (False, ""))
    if not isinstance(ok, bool):
        return _failed(f"invalid plugin response for {method}")
    if not ok:
        answer = _error_envelope_answer(fields.get("error", (None, ""))[0])
        return answer if answer is not None else _failed(f"invalid plugin response for {method}")
    if "result" not in fields:
        return Answer(result="{}")
    return Answer(result=one_line(fields["result"][1]))
