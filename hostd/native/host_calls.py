"""Plugin → host calls in the native worker: the host table handed to ``cliproxy_plugin_init``.

``host->call(host_ctx, method, req, len, resp)`` may be entered from any thread (the plugin's
pthreads, Go's runtime threads, re-entrantly inside a host → plugin call, many at once): it sends a
JSON-RPC request to hostd and blocks only the calling thread until the answer, which comes back as
the proxy's envelope in a ``malloc``'ed buffer that the table's ``free_buffer`` frees.

A callback must never let a Python exception unwind into the plugin's C frames (it returns 1), never
hold a lock while it waits for hostd, and this module never imports hostd's daemon modules (it is
part of the standard-library-only worker). The table and its callbacks live as long as the process:
plugins keep the pointer.
"""

from __future__ import annotations

import ctypes
import traceback
from typing import Any

from hostd.native.abi import ABI_VERSION, HOST_CALL, HOST_FREE, HostApi
from hostd.native.connection import Connection, Pending, Piece, log
from hostd.native.envelopes import OK_PREFIX, OK_SUFFIX, host_error_envelope
from hostd.native.rawjson import is_json_value, one_line


def _piece(data: bytes) -> Piece:
    return (data, 0, len(data))


_OK_PREFIX = _piece(OK_PREFIX)
_OK_SUFFIX = _piece(OK_SUFFIX)


class HostTable:
    """The ``cliproxy_host_api`` of this worker (:attr:`api`), serving host calls over ``conn``."""

    def __init__(self, conn: Connection, libc: ctypes.CDLL) -> None:
        self.conn = conn
        self.libc = libc
        self._ctx = ctypes.c_uint64(1)
        self._call_cb = HOST_CALL(self._host_call)
        self._free_cb = HOST_FREE(self._host_free)
        self.api = HostApi(ABI_VERSION, ctypes.addressof(self._ctx), self._call_cb, self._free_cb)

    def _host_call(self, ctx: int | None, method_p: int | None, req_p: int | None, req_len: int, resp: Any) -> int:
        try:
            if resp:
                resp.contents.ptr = None
                resp.contents.len = 0
            if not ctx or not method_p or self.conn.closed:
                return 1
            method = ctypes.string_at(method_p).decode("utf-8", "replace")
            request = ctypes.string_at(req_p, req_len) if req_p and req_len else b""
            pieces = self.host_call(method, request)
            if not resp:
                return 0
            total = sum(end - start for _, start, end in pieces)
            ptr = self.libc.malloc(max(total, 1))
            if not ptr:
                return 1
            offset = 0
            for data, start, end in pieces:
                if end > start:
                    # c_char_p(bytes) points at the bytes object's own buffer: no intermediate copy.
                    source = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
                    assert source is not None
                    ctypes.memmove(ptr + offset, source + start, end - start)
                    offset += end - start
            resp.contents.ptr = ptr
            resp.contents.len = total
            return 0
        except BaseException:  # an exception must never unwind into the plugin's C frames
            log("host call failed inside the worker:\n" + traceback.format_exc())
            return 1

    def _host_free(self, ptr: int | None, _length: int) -> None:
        if ptr:
            self.libc.free(ptr)

    def host_call(self, method: str, request: bytes) -> list[Piece]:
        """Send ``method`` to hostd and block this thread until its answer; returns the envelope."""
        params: str | None = None
        if request:
            text = request.decode("utf-8", "replace")
            if not is_json_value(text):
                return [_piece(host_error_envelope(f"decode {method} request: invalid JSON"))]
            params = one_line(text)
        pending = Pending()
        if not self.conn.request(method, params, pending):
            return [_piece(host_error_envelope("hostd connection closed"))]
        pending.wait()
        if pending.result is not None:
            return [_OK_PREFIX, pending.result, _OK_SUFFIX]
        answer = pending.answer
        if answer is None:
            return [_piece(host_error_envelope("hostd connection closed"))]
        for key, value, raw in reversed(answer):
            if key == "result":
                return [_OK_PREFIX, _piece(raw.encode()), _OK_SUFFIX]
            if key == "error":
                message = value.get("message", "") if isinstance(value, dict) else ""
                return [_piece(host_error_envelope(message if isinstance(message, str) else str(message)))]
        return [_piece(host_error_envelope("invalid answer from hostd"))]
