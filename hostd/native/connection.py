"""The native worker's protocol connection to hostd: newline-delimited JSON-RPC on two fds.

What is here: writing whole lines (one lock, so lines from many threads never interleave), the
worker's own requests to hostd and their waiters (:class:`Pending`, matched by id), the reader
loop that sorts hostd's lines into answers (handed to their waiter), requests (handed to
``on_request``) and ``$/cancelRequest`` (handed to ``on_cancel``), and failing every waiter when
the connection ends.

The reader thread must never block on the plugin: it never calls into the library, and the
callbacks it is given only queue work. This module never imports hostd's daemon modules (it is
part of the standard-library-only worker).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import traceback
from collections.abc import Callable
from typing import Any

from hostd import SCHEMA_VERSION
from hostd.native.rawjson import REQUEST, SUCCESS, Members, parse_object

READ_CHUNK = 1 << 16

# Part of an envelope: ``data[start:end]``, copied straight into the malloc'ed buffer.
Piece = tuple[bytes, int, int]

# (id, id's raw JSON text, method, params bytes): a request from hostd.
OnRequest = Callable[[Any, str, str, bytes], None]
OnCancel = Callable[[Any], None]


def log(message: str) -> None:
    """One line on the worker's stderr (hostd logs it under the plugin's id)."""
    try:
        os.write(2, f"hostd native worker: {message}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def id_key(value: Any) -> tuple[str, Any]:
    """A JSON-RPC id as a dict key that keeps 1 and "1" apart."""
    return (type(value).__name__, value)


class Pending:
    """A request of the worker's waiting for hostd's answer (a host call, or the hello).

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


class Connection:
    def __init__(self, proto_in: int, proto_out: int) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[tuple[str, Any], Pending] = {}
        self.closed = False  # set by close(): no new requests, every waiter failed
        self.eof = threading.Event()
        self._on_request: OnRequest | None = None
        self._on_cancel: OnCancel | None = None

    # -- output --

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

    def request(self, method: str, params: str | None, pending: Pending) -> bool:
        """Send a request (``params`` is raw JSON text, or None for none); ``pending`` gets the answer."""
        request_id = next(self._ids)
        key = id_key(request_id)
        with self._lock:
            if self.closed:
                return False
            self._pending[key] = pending
        line = '{"jsonrpc":"2.0","id":' + str(request_id) + ',"method":' + json.dumps(method, ensure_ascii=False)
        line += "}\n" if params is None else ',"params":' + params + "}\n"
        if not self.send(line.encode()):
            with self._lock:
                self._pending.pop(key, None)
            return False
        return True

    def send_hello(self, plugin_id: str) -> None:
        def answered(answer: Members | None) -> None:
            if answer is None:
                return
            fields = dict((key, value) for key, value, _ in answer)
            if "error" in fields:
                error = fields["error"]
                message = error.get("message") if isinstance(error, dict) else error
                log(f"hostd.hello for {plugin_id} refused: {message}")

        params = json.dumps(
            {"plugin_id": plugin_id, "schema_version": SCHEMA_VERSION}, ensure_ascii=False, separators=(",", ":")
        )
        self.request("hostd.hello", params, Pending(answered))

    # -- input --

    def read_loop(self, on_request: OnRequest, on_cancel: OnCancel) -> None:
        """Read hostd's lines until EOF (then set :attr:`eof`); run on a thread of its own."""
        self._on_request, self._on_cancel = on_request, on_cancel
        try:
            with os.fdopen(self.proto_in, "rb", buffering=READ_CHUNK) as stream:
                for line in stream:
                    line = line.rstrip(b"\r\n")
                    if line.strip():
                        self._dispatch(line)
        except OSError as exc:
            log(f"protocol read failed: {exc}")
        except BaseException:
            log("reader failed:\n" + traceback.format_exc())
        finally:
            self.eof.set()

    def _dispatch(self, line: bytes) -> None:
        assert self._on_request is not None and self._on_cancel is not None
        if line.endswith(b"}"):
            # The line is one JSON object, so what follows "result": (or "params":) up to the
            # final brace is that member's value, exactly as hostd wrote it.
            fast = SUCCESS.match(line)
            if fast is not None:
                # (A success needs no on_answer: the hello's only logs a refusal.)
                with self._lock:
                    pending = self._pending.pop(id_key(int(fast.group(1))), None)
                if pending is None:
                    log("dropped an answer from hostd that matches no host call")
                else:
                    pending.result = (line, fast.end(), len(line) - 1)
                    pending.set()
                return
            fast = REQUEST.match(line)
            if fast is not None:
                id_raw = fast.group(1).decode()
                self._on_request(json.loads(id_raw), id_raw, json.loads(fast.group(2)), line[fast.end() : -1])
                return
        text = line.decode("utf-8", "replace")
        members = parse_object(text)
        if members is None:
            log(f"ignored a line from hostd that is not a JSON object ({len(line)} bytes)")
            return
        fields = {key: (value, raw) for key, value, raw in members}
        method = fields.get("method", (None, ""))[0]
        if isinstance(method, str):
            if "id" in fields:
                id_value, id_raw = fields["id"]
                params = fields["params"][1].encode() if "params" in fields else b"{}"
                self._on_request(id_value, id_raw, method, params)
            elif method == "$/cancelRequest":
                cancel = fields.get("params", (None, ""))[0]
                if isinstance(cancel, dict) and "id" in cancel:
                    self._on_cancel(cancel["id"])
            return
        if "result" in fields or "error" in fields:
            key = id_key(fields.get("id", (None, ""))[0])
            with self._lock:
                pending = self._pending.pop(key, None)
            if pending is None:
                log("dropped an answer from hostd that matches no host call")
                return
            pending.answer = members
            if pending.on_answer is not None:
                pending.on_answer(members)
            pending.set()

    # -- end --

    def close(self) -> None:
        """No more requests; every waiter gets "connection closed" (its answer stays None)."""
        with self._lock:
            self.closed = True
            pending, self._pending = list(self._pending.values()), {}
        for waiting in pending:
            if waiting.on_answer is not None:
                waiting.on_answer(None)
            waiting.set()
