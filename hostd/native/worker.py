"""The native plugin worker: one CLIProxyAPI plugin library in a process of its own (PROTOCOL §14).

Run as ``python -m hostd.native.worker PATH.so [--name ID]`` with the protocol connection to hostd
on its stdin/stdout (pipes or a socket). A crash in the library (a segfault, ``abort()``, a stray
``exit()``) ends this process and nothing else.

What it does, in order:

1. moves the protocol connection off fds 0 and 1 (``dup``, close-on-exec so the plugin's own
   children never hold hostd's pipe), points fd 1 at stderr and fd 0 at ``/dev/null``: a plugin's
   ``printf``/``fmt.Println`` becomes log lines, never protocol bytes (C ``stdout`` is made line
   buffered so those lines come out as they are printed);
2. starts the reader thread (so host calls made inside ``cliproxy_plugin_init`` are served);
3. loads the library as the proxy's loader does: ``dlopen(RTLD_NOW | RTLD_LOCAL)``,
   ``cliproxy_plugin_init`` with a host table of ABI version 1, then the ABI and table checks. A
   failure writes ``LOAD_ERROR_PREFIX + <the proxy's words>`` as one stderr line and exits 1,
   without sending ``hostd.hello``;
4. sends ``hostd.hello {"plugin_id", "schema_version": 3}`` and serves: every request from hostd
   (any method) calls the plugin's ``call`` on a thread of its own and is answered by id;
   ``host->call`` from any plugin thread becomes a request to hostd, and only that thread waits;
5. on EOF of the protocol input (or SIGTERM): host calls still waiting fail, calls in progress get
   ``SHUTDOWN_GRACE_S`` to finish, the table's ``shutdown`` runs, and the process exits 0.

Why ctypes and no C helper: ctypes callbacks may be entered from any thread, threads the plugin
made itself (pthreads, Go's runtime threads) included; each entry takes the GIL for the few
microseconds it needs to write a line, and a foreign call releases the GIL while the plugin runs, so
plugin threads never wait on Python except to format their own request.

This module is standard library only and must never import hostd's daemon modules (no httpx, no
``hostd.server``/``hostd.rpc``): it is started for every plugin, and again after every crash.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import itertools
import json
import os
import queue
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from hostd import SCHEMA_VERSION
from hostd.native import LOAD_ERROR_EXIT, LOAD_ERROR_PREFIX
from hostd.native.naming import plugin_id_from_path

ABI_VERSION = 1
SHUTDOWN_GRACE_S = 2.0  # after EOF, how long calls in progress may still finish and answer
READ_CHUNK = 1 << 16
_IOLBF = 1  # glibc's setvbuf mode for line buffering

# --- the C ABI (sdk/pluginabi, as the proxy's loader declares it) ------------------------------


class Buffer(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t)]


HOST_CALL = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(Buffer)
)
HOST_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t)
PLUGIN_CALL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(Buffer))
PLUGIN_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t)
PLUGIN_SHUTDOWN = ctypes.CFUNCTYPE(None)


class HostApi(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("host_ctx", ctypes.c_void_p),
        ("call", HOST_CALL),
        ("free_buffer", HOST_FREE),
    ]


class PluginApi(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("call", PLUGIN_CALL),
        ("free_buffer", PLUGIN_FREE),
        ("shutdown", PLUGIN_SHUTDOWN),
    ]


class LoadError(Exception):
    """The library cannot be used; the message is the proxy's loader's text."""


# --- JSON without re-encoding ---------------------------------------------------------------------
# Results and params pass through byte for byte: a top-level object is walked key by key and each
# value's exact text is kept beside its decoded value.

_WS = re.compile(r"[ \t\n\r]*")
# hostd's own lines, as its encoder writes them (keys in this order, no spaces): matched on the
# bytes so that a large result or params object is sliced, never decoded and re-encoded. Any other
# shape takes the general path.
_SUCCESS = re.compile(rb'\{"jsonrpc":"2\.0","id":([0-9]{1,18}),"result":')
_REQUEST = re.compile(
    rb'\{"jsonrpc":"2\.0","id":("(?:[^"\\]|\\.)*"|-?[0-9]{1,18}),"method":("(?:[^"\\]|\\.)*"),"params":'
)
_OK_PREFIX = b'{"ok":true,"result":'

_local = threading.local()


def _skip_ws(text: str, i: int) -> int:
    match = _WS.match(text, i)
    return match.end() if match is not None else i


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decoder() -> json.JSONDecoder:
    # One decoder per thread: the C scanner's key memo is not meant to be shared across threads.
    decoder: json.JSONDecoder | None = getattr(_local, "decoder", None)
    if decoder is None:
        decoder = json.JSONDecoder(parse_constant=_reject_constant)
        _local.decoder = decoder
    return decoder


Members = list[tuple[str, Any, str]]


def parse_object(text: str) -> Members | None:
    """The members of the JSON object ``text`` as ``(key, value, raw text)``, in order; else None."""
    decoder = _decoder()
    n = len(text)
    i = _skip_ws(text, 0)
    if i >= n or text[i] != "{":
        return None
    i = _skip_ws(text, i + 1)
    members: Members = []
    try:
        if i < n and text[i] == "}":
            i += 1
        else:
            while True:
                if i >= n or text[i] != '"':
                    return None
                key, i = json.decoder.scanstring(text, i + 1, True)  # type: ignore[attr-defined]
                i = _skip_ws(text, i)
                if i >= n or text[i] != ":":
                    return None
                i = _skip_ws(text, i + 1)
                value, end = decoder.raw_decode(text, i)
                members.append((key, value, text[i:end]))
                i = _skip_ws(text, end)
                if i < n and text[i] == ",":
                    i = _skip_ws(text, i + 1)
                    continue
                if i < n and text[i] == "}":
                    i += 1
                    break
                return None
    except (ValueError, RecursionError):
        return None
    if _skip_ws(text, i) != n:
        return None
    return members


def is_json_value(text: str) -> bool:
    """Exactly one JSON value, surrounded by whitespace at most (Go's ``json.Valid``)."""
    try:
        start = _skip_ws(text, 0)
        _, end = _decoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        return False
    return _skip_ws(text, end) == len(text)


def one_line(raw: str) -> str:
    """Valid JSON holds CR and LF only as whitespace between tokens: blank them to keep one line."""
    if "\n" in raw or "\r" in raw:
        return raw.replace("\n", " ").replace("\r", " ")
    return raw


def folded(members: Members) -> dict[str, tuple[Any, str]]:
    """Members by lower-cased key, the last one winning: how Go's decoder fills a struct."""
    return {key.lower(): (value, raw) for key, value, raw in members}


_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def go_string(value: str) -> str:
    """A JSON string as Go's ``json.Marshal`` writes it (HTML characters escaped, UTF-8 kept)."""
    return json.dumps(value, ensure_ascii=False).translate(_GO_ESCAPES)


def host_error_envelope(message: str) -> bytes:
    """The envelope the proxy hands a plugin for a failed host call."""
    return ('{"ok":false,"error":{"code":"host_call_failed","message":' + go_string(message) + "}}").encode()


# --- plugin answers → JSON-RPC --------------------------------------------------------------------


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


# --- the worker -------------------------------------------------------------------------------------


def _log(message: str) -> None:
    try:
        os.write(2, f"hostd native worker: {message}\n".encode("utf-8", "replace"))
    except OSError:
        pass


# Part of an envelope: ``data[start:end]``, copied straight into the malloc'ed buffer.
Piece = tuple[bytes, int, int]


def _piece(data: bytes) -> Piece:
    return (data, 0, len(data))


_OK_SUFFIX = _piece(b"}")


class _Pending:
    """A host call waiting for hostd's answer (or the hello).

    The waiter blocks on a bare lock that the reader releases (``threading.Event`` costs a
    Condition and a second lock per wait: measurable on every host call).
    """

    __slots__ = ("_lock", "answer", "on_answer", "result")

    def __init__(self, on_answer: Callable[[Members | None], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.answer: Members | None = None  # None (and no result): the connection closed first
        self.result: Piece | None = None  # a success's result, sliced from its line by the fast path
        self.on_answer = on_answer

    def set(self) -> None:
        self._lock.release()

    def wait(self) -> None:
        self._lock.acquire()


def _id_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


class Worker:
    def __init__(self, proto_in: int, proto_out: int, plugin_id: str) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.plugin_id = plugin_id
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.malloc.restype = ctypes.c_void_p
        self.libc.malloc.argtypes = [ctypes.c_size_t]
        self.libc.free.restype = None
        self.libc.free.argtypes = [ctypes.c_void_p]
        self.libc.fflush.argtypes = [ctypes.c_void_p]
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[tuple[str, Any], _Pending] = {}
        self._in_flight: set[tuple[str, Any]] = set()
        self._cancelled: set[tuple[str, Any]] = set()
        self._all_done = threading.Condition(self._lock)
        # Host → plugin calls run on pooled threads: a thread per call costs more than the call.
        # The pool grows to the peak number of concurrent calls (a hung call keeps its thread).
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle_threads = 0
        self._closed = False
        self.ready = threading.Event()
        self.eof = threading.Event()
        self.library: ctypes.CDLL | None = None
        self.plugin = PluginApi()
        # The host table and its callbacks live as long as the process: plugins keep the pointer.
        self._host_ctx = ctypes.c_uint64(1)
        self._host_call_cb = HOST_CALL(self._host_call)
        self._host_free_cb = HOST_FREE(self._host_free)
        self.host = HostApi(ABI_VERSION, ctypes.addressof(self._host_ctx), self._host_call_cb, self._host_free_cb)

    # -- loading --

    def load(self, path: str) -> None:
        """Load and initialise the library; raises :class:`LoadError` with the proxy's words."""
        # dlopen searches the library path for a bare name; the proxy always passes a path.
        target = path if "/" in path else os.path.join(".", path)
        try:
            library = ctypes.CDLL(target, mode=os.RTLD_NOW | os.RTLD_LOCAL)
        except OSError as exc:
            raise LoadError(f"dlopen {path}: {exc}") from None
        try:
            init = library.cliproxy_plugin_init
        except AttributeError as exc:
            raise LoadError(f"missing cliproxy_plugin_init: {exc}") from None
        init.argtypes = [ctypes.POINTER(HostApi), ctypes.POINTER(PluginApi)]
        init.restype = ctypes.c_int
        self.library = library
        rc = init(ctypes.byref(self.host), ctypes.byref(self.plugin))
        if rc != 0:
            self._shutdown_table()
            raise LoadError(f"cliproxy_plugin_init returned {rc}")
        if self.plugin.abi_version != ABI_VERSION:
            version = self.plugin.abi_version
            self._shutdown_table()
            raise LoadError(f"plugin ABI version {version} is not supported")
        if not self.plugin.call or not self.plugin.free_buffer:
            self._shutdown_table()
            raise LoadError("plugin function table is incomplete")

    def _shutdown_table(self) -> None:
        # A function pointer read from a Structure shares the Structure's memory: copy the address
        # before clearing the field (so shutdown runs once).
        address = ctypes.cast(self.plugin.shutdown, ctypes.c_void_p).value
        if address:
            self.plugin.shutdown = PLUGIN_SHUTDOWN()
            PLUGIN_SHUTDOWN(address)()

    # -- protocol output --

    def send(self, line: bytes) -> bool:
        """Write one whole line; False when hostd is gone."""
        view = memoryview(line)
        with self._write_lock:
            try:
                while view:
                    written = os.write(self.proto_out, view)
                    view = view[written:]
            except OSError:
                self.eof.set()
                return False
        return True

    def send_hello(self) -> None:
        def answered(answer: Members | None) -> None:
            if answer is None:
                return
            fields = dict((key, value) for key, value, _ in answer)
            if "error" in fields:
                error = fields["error"]
                message = error.get("message") if isinstance(error, dict) else error
                _log(f"hostd.hello for {self.plugin_id} refused: {message}")

        params = json.dumps(
            {"plugin_id": self.plugin_id, "schema_version": SCHEMA_VERSION}, ensure_ascii=False, separators=(",", ":")
        )
        self._request("hostd.hello", params, _Pending(answered))

    def _request(self, method: str, params: str | None, pending: _Pending) -> bool:
        request_id = next(self._ids)
        key = _id_key(request_id)
        with self._lock:
            if self._closed:
                return False
            self._pending[key] = pending
        line = '{"jsonrpc":"2.0","id":' + str(request_id) + ',"method":' + json.dumps(method, ensure_ascii=False)
        line += "}\n" if params is None else ',"params":' + params + "}\n"
        if not self.send(line.encode()):
            with self._lock:
                self._pending.pop(key, None)
            return False
        return True

    # -- plugin → host --

    def _host_call(self, ctx: int | None, method_p: int | None, req_p: int | None, req_len: int, resp: Any) -> int:
        try:
            if resp:
                resp.contents.ptr = None
                resp.contents.len = 0
            if not ctx or not method_p or self._closed:
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
            _log("host call failed inside the worker:\n" + traceback.format_exc())
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
        pending = _Pending()
        if not self._request(method, params, pending):
            return [_piece(host_error_envelope("hostd connection closed"))]
        pending.wait()
        if pending.result is not None:
            return [_piece(_OK_PREFIX), pending.result, _OK_SUFFIX]
        answer = pending.answer
        if answer is None:
            return [_piece(host_error_envelope("hostd connection closed"))]
        for key, value, raw in reversed(answer):
            if key == "result":
                return [_piece(_OK_PREFIX), _piece(raw.encode()), _OK_SUFFIX]
            if key == "error":
                message = value.get("message", "") if isinstance(value, dict) else ""
                return [_piece(host_error_envelope(message if isinstance(message, str) else str(message)))]
        return [_piece(host_error_envelope("invalid answer from hostd"))]

    # -- host → plugin --

    def _serve(self, id_value: Any, id_raw: str, method: str, params: bytes) -> None:
        key = _id_key(id_value)
        try:
            self.ready.wait()
            answer = self.call_plugin(method, params)
        except BaseException:
            _log(f"call {method} failed inside the worker:\n" + traceback.format_exc())
            answer = Answer(code=-32603, message=f"internal error in {method}", data={"code": "internal_error"})
        with self._lock:
            cancelled = key in self._cancelled
        if not cancelled:  # hostd already answered a cancelled invoke itself: the late answer is dropped
            self.send(answer.line(id_raw))
        with self._lock:  # only now, so that close() lets this answer out before the process exits
            self._cancelled.discard(key)
            self._in_flight.discard(key)
            self._all_done.notify_all()

    def _start_call(self, id_value: Any, id_raw: str, method: str, params: bytes) -> None:
        with self._lock:
            self._in_flight.add(_id_key(id_value))
        self._submit(functools.partial(self._serve, id_value, id_raw, method, params))

    def _submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on an idle pool thread, or on a new one when none is idle."""
        with self._lock:
            spawn = self._idle_threads == 0
            if not spawn:
                self._idle_threads -= 1
        if spawn:
            threading.Thread(target=self._pool_thread, name="plugin call", daemon=True).start()
        self._jobs.put(job)

    def _pool_thread(self) -> None:
        while True:
            self._jobs.get()()
            with self._lock:
                self._idle_threads += 1

    def call_plugin(self, method: str, params: bytes) -> Answer:
        response = Buffer()
        rc = self.plugin.call(method.encode(), params, len(params), ctypes.byref(response))
        out = ctypes.string_at(response.ptr, response.len) if response.ptr and response.len else b""
        if response.ptr:
            self.plugin.free_buffer(response.ptr, response.len)
        return plugin_answer(method, rc, out)

    # -- protocol input --

    def read_loop(self) -> None:
        try:
            with os.fdopen(self.proto_in, "rb", buffering=READ_CHUNK) as stream:
                for line in stream:
                    line = line.rstrip(b"\r\n")
                    if line.strip():
                        self._dispatch(line)
        except OSError as exc:
            _log(f"protocol read failed: {exc}")
        except BaseException:
            _log("reader failed:\n" + traceback.format_exc())
        finally:
            self.eof.set()

    def _dispatch(self, line: bytes) -> None:
        if line.endswith(b"}"):
            # The line is one JSON object, so what follows "result": (or "params":) up to the
            # final brace is that member's value, exactly as hostd wrote it.
            fast = _SUCCESS.match(line)
            if fast is not None:
                # (A success needs no on_answer: the hello's only logs a refusal.)
                with self._lock:
                    pending = self._pending.pop(_id_key(int(fast.group(1))), None)
                if pending is None:
                    _log("dropped an answer from hostd that matches no host call")
                else:
                    pending.result = (line, fast.end(), len(line) - 1)
                    pending.set()
                return
            fast = _REQUEST.match(line)
            if fast is not None:
                id_raw = fast.group(1).decode()
                id_value, method = json.loads(id_raw), json.loads(fast.group(2))
                self._start_call(id_value, id_raw, method, line[fast.end() : -1])
                return
        text = line.decode("utf-8", "replace")
        members = parse_object(text)
        if members is None:
            _log(f"ignored a line from hostd that is not a JSON object ({len(line)} bytes)")
            return
        fields = {key: (value, raw) for key, value, raw in members}
        method = fields.get("method", (None, ""))[0]
        if isinstance(method, str):
            if "id" in fields:
                id_value, id_raw = fields["id"]
                self._start_call(
                    id_value, id_raw, method, fields["params"][1].encode() if "params" in fields else b"{}"
                )
            elif method == "$/cancelRequest":
                params = fields.get("params", (None, ""))[0]
                if isinstance(params, dict) and "id" in params:
                    key = _id_key(params["id"])
                    with self._lock:
                        if key in self._in_flight:
                            self._cancelled.add(key)
            return
        if "result" in fields or "error" in fields:
            key = _id_key(fields.get("id", (None, ""))[0])
            with self._lock:
                pending = self._pending.pop(key, None)
            if pending is None:
                _log("dropped an answer from hostd that matches no host call")
                return
            pending.answer = members
            if pending.on_answer is not None:
                pending.on_answer(members)
            pending.set()

    # -- shutdown --

    def close(self) -> None:
        """After EOF: fail waiting host calls, let calls in progress finish (bounded), shut the table."""
        with self._lock:
            self._closed = True
            pending, self._pending = list(self._pending.values()), {}
        for waiting in pending:
            if waiting.on_answer is not None:
                waiting.on_answer(None)
            waiting.set()
        with self._lock:
            self._all_done.wait_for(lambda: not self._in_flight, timeout=SHUTDOWN_GRACE_S)
        if self.library is not None:
            self._shutdown_table()

    def flush_stdio(self) -> None:
        try:
            self.libc.fflush(None)
        except Exception:
            pass


def take_protocol_fds() -> tuple[int, int]:
    """Move the protocol off fds 0/1; fd 1 becomes stderr and fd 0 ``/dev/null``."""
    proto_in = os.dup(0)  # non-inheritable: a plugin's children must not keep hostd's pipe open
    proto_out = os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    if devnull != 0:
        os.dup2(devnull, 0)
        os.close(devnull)
    return proto_in, proto_out


def line_buffer_c_stdout(libc: ctypes.CDLL) -> None:
    """C ``stdout`` on a pipe is fully buffered: make ``printf`` lines appear as they are printed."""
    try:
        stream = ctypes.c_void_p.in_dll(libc, "stdout")
        libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t]
        libc.setvbuf(stream, None, _IOLBF, 0)
    except (ValueError, AttributeError):  # not glibc: output still reaches stderr, only later
        pass


class _Stop(BaseException):
    """SIGTERM arrived while the worker was serving."""


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _Stop


def _exit(worker: Worker | None, code: int) -> NoReturn:
    # os._exit: plugin threads (Go's runtime among them) may still run; interpreter finalisation
    # under them could crash in a callback. Flush what the plugin printed first.
    if worker is not None:
        worker.flush_stdio()
    try:
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m hostd.native.worker", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the plugin library (.so)")
    parser.add_argument("--name", help="plugin id (default: from the file name, as the proxy derives it)")
    args = parser.parse_args(argv)
    plugin_id = args.name or plugin_id_from_path(args.path)

    proto_in, proto_out = take_protocol_fds()
    worker = Worker(proto_in, proto_out, plugin_id)
    line_buffer_c_stdout(worker.libc)
    reader = threading.Thread(target=worker.read_loop, name="protocol reader", daemon=True)
    reader.start()
    try:
        worker.load(args.path)
    except LoadError as exc:
        os.write(2, (LOAD_ERROR_PREFIX + str(exc).replace("\n", " ") + "\n").encode("utf-8", "replace"))
        _exit(worker, LOAD_ERROR_EXIT)
    # SIGTERM (hostd ending the worker's process group) is a stop like EOF: the table's shutdown
    # still runs. The handler only raises, so it never takes a lock the main thread may hold; it is
    # in place before the hello, so a worker that said hello always stops this way. A second
    # SIGTERM kills at once.
    try:
        signal.signal(signal.SIGTERM, _raise_stop)
        worker.send_hello()
        worker.ready.set()
        worker.eof.wait()
    except _Stop:
        _log("SIGTERM: shutting the plugin down")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    worker.close()
    _exit(worker, 0)


if __name__ == "__main__":
    main()
