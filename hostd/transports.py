"""Byte transports for sessions: stdio pipes and Unix sockets (created or inherited).

Each transport feeds bytes into a :class:`~hostd.rpc.session.Session` and gives it a way
to write and to pause reading. Nothing here knows JSON-RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

from hostd.rpc.session import Session

# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107


class StartupError(Exception):
    """hostd cannot start: the socket is in use, a path is too long, permissions (exit 1)."""


class _WritePipeProtocol(asyncio.BaseProtocol):
    """The writing half of a session's transport: flow control and loss."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.lost(exc)

    def pause_writing(self) -> None:
        self.session.pause_writing()

    def resume_writing(self) -> None:
        self.session.resume_writing()


class SessionProtocol(_WritePipeProtocol, asyncio.Protocol):
    """Connects one socket (or the read side of a pipe) to a session.

    Reading starts paused: the session resumes it once it runs, so no byte is processed
    outside the session's fault boundary. ``Session.feed`` never raises.
    """

    def connection_made(self, transport: Any) -> None:
        transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.session.feed(data)

    def eof_received(self) -> bool:
        self.session.eof()
        return True  # keep the write side open to answer what is in flight


class _ReadPipeProtocol(SessionProtocol):
    """The reading half of a stdio session: its end is the end of input, not of output."""

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.eof()


class _BlockingOutput:
    """stdout that is a regular file: writes are quick and may block."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._closed = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        self._closed = True

    def is_closing(self) -> bool:
        return self._closed


class _ThreadInput:
    """stdin that is a regular file: a thread reads it once the session resumes reading."""

    def __init__(self, session: Session, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._args = (session, fd, loop)
        self._started = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        if not self._started:
            self._started = True
            _start_reader_thread(*self._args)


async def attach_stdio(session: Session, stdin_fd: int = 0, stdout_fd: int = 1) -> Callable[[], None]:
    """Wire ``session`` to stdin/stdout. Returns a function that releases the pipes.

    When both are one socket (the bridge hands ``hostd bridge`` one end of a socketpair),
    it is served as a connected socket: event loops mishandle a socket as a write pipe."""
    loop = asyncio.get_running_loop()
    cleanups: list[Callable[[], None]] = []
    if _same_socket(stdin_fd, stdout_fd):
        sock = socket.socket(fileno=os.dup(stdin_fd))
        sock.setblocking(False)
        transport, _ = await loop.connect_accepted_socket(lambda: SessionProtocol(session), sock)
        session.attach(transport, transport)

        def release_socket() -> None:
            with contextlib.suppress(Exception):
                transport.close()

        return release_socket
    output: Any
    if _is_regular_file(stdout_fd):  # pipes only: event loops refuse (or mishandle) files
        output = _BlockingOutput(stdout_fd)
    else:
        write_file = os.fdopen(os.dup(stdout_fd), "wb", buffering=0)
        output, _ = await loop.connect_write_pipe(lambda: _WritePipeProtocol(session), write_file)
        cleanups.append(output.close)
    input_control: Any
    if _is_regular_file(stdin_fd):
        input_control = _ThreadInput(session, stdin_fd, loop)
    else:
        read_file = os.fdopen(os.dup(stdin_fd), "rb", buffering=0)
        input_control, _ = await loop.connect_read_pipe(lambda: _ReadPipeProtocol(session), read_file)
        cleanups.append(input_control.close)
    session.attach(output, input_control)

    def release() -> None:
        for cleanup in cleanups:
            with contextlib.suppress(Exception):
                cleanup()

    return release


def _same_socket(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return stat.S_ISSOCK(sa.st_mode) and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _is_regular_file(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _start_reader_thread(session: Session, fd: int, loop: asyncio.AbstractEventLoop) -> None:
    def pump() -> None:
        try:
            while data := os.read(fd, 1 << 16):
                loop.call_soon_threadsafe(session.feed, data)
        except OSError:
            pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(session.eof)

    threading.Thread(target=pump, name="hostd-stdin", daemon=True).start()


def peer_credentials(sock: socket.socket) -> tuple[int | None, int | None]:
    """(pid, uid) of a Unix socket peer, from SO_PEERCRED."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None, None
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


def parse_unix_address(address: str) -> str:
    if not address.startswith("unix:") or len(address) <= 5:
        raise StartupError(f"unsupported address {address!r}: expected unix:PATH")
    return address[5:]


def bind_unix_socket(path: str, mode: int) -> socket.socket:
    """Create a listening Unix socket at ``path`` with ``mode``.

    A stale socket file (nobody accepting) is replaced; a live one is refused. The socket
    is bound under a umask that keeps it private until its mode is set, so it is never
    briefly world-accessible.
    """
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise StartupError(
            f"socket path is too long ({len(os.fsencode(path))} bytes, the limit is {MAX_UNIX_PATH}): {path}"
        )
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise StartupError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # stale: its daemon is gone
        except OSError as e:
            raise StartupError(f"cannot check existing socket {path}: {e.strerror}") from None
        else:
            raise StartupError(f"{path} is in use by a running server; refusing to replace it")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise StartupError(f"{path} is in use") from None
        raise StartupError(f"cannot bind {path}: {e.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
