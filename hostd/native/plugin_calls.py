"""Host → plugin calls in the native worker: each request from hostd runs the plugin's ``call``.

Each call runs on a pooled thread (a thread per call costs more than the call; the pool grows to
the peak number of concurrent calls, and a hung call keeps its thread), with the GIL released for
the whole C call. The answer is mapped by :func:`hostd.native.envelopes.plugin_answer` and sent by
id; a call hostd cancelled (``$/cancelRequest``) still runs to its end, but its late answer is
dropped, because hostd has answered the invoker already.

This module never runs a plugin call on the reader's thread, never lets an exception escape a
pool thread, and never imports hostd's daemon modules (it is part of the standard-library-only
worker).
"""

from __future__ import annotations

import ctypes
import functools
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any

from hostd.native.abi import Buffer, PluginApi
from hostd.native.connection import id_key, log
from hostd.native.envelopes import Answer, plugin_answer


class PluginCalls:
    """The calls in progress, and the pool they run on."""

    def __init__(self, plugin: PluginApi, send: Callable[[bytes], bool], ready: threading.Event) -> None:
        self.plugin = plugin
        self._send = send
        self._ready = ready  # set once the library is loaded and the hello sent: calls wait for it
        self._lock = threading.Lock()
        self._in_flight: set[tuple[str, Any]] = set()
        self._cancelled: set[tuple[str, Any]] = set()
        self._all_done = threading.Condition(self._lock)
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle_threads = 0

    def start(self, id_value: Any, id_raw: str, method: str, params: bytes) -> None:
        """A request from hostd: queue it (called on the reader's thread; never blocks)."""
        with self._lock:
            self._in_flight.add(id_key(id_value))
        self._submit(functools.partial(self._serve, id_value, id_raw, method, params))

    def cancel(self, id_value: Any) -> None:
        """``$/cancelRequest``: the call cannot be stopped, its answer is dropped."""
        key = id_key(id_value)
        with self._lock:
            if key in self._in_flight:
                self._cancelled.add(key)

    def wait_idle(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until no call is in progress; False when some still are."""
        with self._lock:
            return self._all_done.wait_for(lambda: not self._in_flight, timeout=timeout)

    def call_plugin(self, method: str, params: bytes) -> Answer:
        response = Buffer()
        rc = self.plugin.call(method.encode(), params, len(params), ctypes.byref(response))
        out = ctypes.string_at(response.ptr, response.len) if response.ptr and response.len else b""
        if response.ptr:
            self.plugin.free_buffer(response.ptr, response.len)
        return plugin_answer(method, rc, out)

    def _serve(self, id_value: Any, id_raw: str, method: str, params: bytes) -> None:
        key = id_key(id_value)
        try:
            self._ready.wait()
            answer = self.call_plugin(method, params)
        except BaseException:
            log(f"call {method} failed inside the worker:\n" + traceback.format_exc())
            answer = Answer(code=-32603, message=f"internal error in {method}", data={"code": "internal_error"})
        with self._lock:
            cancelled = key in self._cancelled
        if not cancelled:  # hostd already answered a cancelled invoke itself: the late answer is dropped
            self._send(answer.line(id_raw))
        with self._lock:  # only now, so that wait_idle() lets this answer out before the process exits
            self._cancelled.discard(key)
            self._in_flight.discard(key)
            self._all_done.notify_all()

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
