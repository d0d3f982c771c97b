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

The worker's parts, one module each: :mod:`hostd.native.abi` (the C ABI and loading),
:mod:`hostd.native.connection` (the protocol connection, framing and waiters),
:mod:`hostd.native.plugin_calls` (host → plugin), :mod:`hostd.native.host_calls` (plugin → host),
:mod:`hostd.native.envelopes` (the envelope mapping both ways) and :mod:`hostd.native.rawjson`
(JSON kept byte for byte). This module only wires them and runs the process.

The worker is standard library only and must never import hostd's daemon modules (no httpx, no
``hostd.server``/``hostd.rpc``): it is started for every plugin, and again after every crash.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
from typing import NoReturn

from hostd.native import LOAD_ERROR_EXIT, LOAD_ERROR_PREFIX, abi
from hostd.native.abi import LoadError, PluginApi
from hostd.native.connection import Connection, log
from hostd.native.host_calls import HostTable
from hostd.native.naming import plugin_id_from_path
from hostd.native.plugin_calls import PluginCalls

SHUTDOWN_GRACE_S = 2.0  # after EOF, how long calls in progress may still finish and answer
_IOLBF = 1  # glibc's setvbuf mode for line buffering


class Worker:
    """One plugin library behind one protocol connection."""

    def __init__(self, proto_in: int, proto_out: int, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        self.libc = abi.libc()
        self.conn = Connection(proto_in, proto_out)
        self.ready = threading.Event()
        self.library: ctypes.CDLL | None = None
        self.plugin = PluginApi()
        self.host = HostTable(self.conn, self.libc)
        self.calls = PluginCalls(self.plugin, self.conn.send, self.ready)

    def load(self, path: str) -> None:
        """Load and initialise the library; raises :class:`LoadError` with the proxy's words."""
        self.library = abi.load(path, self.host.api, self.plugin)

    def read_loop(self) -> None:
        self.conn.read_loop(self.calls.start, self.calls.cancel)

    def close(self) -> None:
        """After EOF: fail waiting host calls, let calls in progress finish (bounded), shut the table."""
        self.conn.close()
        self.calls.wait_idle(SHUTDOWN_GRACE_S)
        if self.library is not None:
            abi.shutdown_table(self.plugin)

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
        worker.conn.send_hello(worker.plugin_id)
        worker.ready.set()
        worker.conn.eof.wait()
    except _Stop:
        log("SIGTERM: shutting the plugin down")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    worker.close()
    _exit(worker, 0)


if __name__ == "__main__":
    main()
