"""``hostd run``: spawn one plugin and serve it on its stdin/stdout, as the proxy runs each plugin.

:class:`PluginRunner` is a child supervisor: the daemon runs it inside its own task group
(``Daemon.run(child=...)``) and exits with what it returns. It makes the child's pipes,
asks the daemon for a plugin session on them (``serve_pipes``: the session holds its own
duplicates, so closing the session's side is the child's EOF), starts the child and waits
for both to end. The control socket and every other serve option work as for ``hostd serve``.

Lifetimes, both ways:
- the child is forked from the main thread (``PR_SET_PDEATHSIG`` fires when the *forking
  thread* dies) into its own process group, and gets SIGKILL the moment hostd dies, however
  it dies; stdin EOF tells it too;
- the child exiting ends the session, and hostd exits with the child's status (128+N for
  signal N);
- SIGTERM/SIGINT to hostd: the child's process group gets SIGTERM, then SIGKILL after
  ``shutdown_grace_s``. When the session ends by itself (the child closed its stdout), the
  child first gets that long to exit on its own.

The child's stderr becomes hostd log lines tagged with the plugin's name. Nothing here may
leave the child running when ``run_plugin`` returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from hostd.config import Config
from hostd.logs import Logger
from hostd.rpc.session import Session

if TYPE_CHECKING:
    from hostd.services import Services

PR_SET_PDEATHSIG = 1
EXIT_DRAIN_S = 1.0  # after the child exits, how long its stdout may stay open (a grandchild holds it)
STDERR_DRAIN_S = 1.0
MAX_STDERR_LINE = 64 * 1024


class ChildHost(Protocol):
    """What the supervisor needs from the daemon it runs in (``hostd.server.Daemon``)."""

    shutdown: asyncio.Event

    @property
    def services(self) -> Services: ...

    async def serve_pipes(
        self, read_fd: int, write_fd: int, *, name: str = "", watch_shutdown: bool = True
    ) -> Session: ...


def exit_code(returncode: int) -> int:
    """A child's status as a shell reports it: its exit code, or 128+N for signal N."""
    return returncode if returncode >= 0 else 128 - returncode


def _load_prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # not Linux
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


class ChildProcess:
    """One plugin process on a fresh session of the daemon: pipes, spawn, exit watch, stderr
    to the log, stop. :class:`PluginRunner` runs one; the native runner runs one per worker."""

    def __init__(self, config: Config, logger: Logger, cmd: list[str], name: str = "") -> None:
        self.config = config
        self.logger = logger
        self.cmd = cmd
        self.name = name
        self.session: Session | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.spawn_error: int | None = None
        self.recent_stderr: collections.deque[str] = collections.deque(maxlen=20)
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._exited = self.exited
        self._stderr: _StderrLines | None = None
        self._stderr_transport: asyncio.BaseTransport | None = None
        self._pipes: dict[str, int] = {}
        self._session_fds = (0, 1)

    @property
    def returncode(self) -> int | None:
        return self.child.returncode if self.child is not None else None

    async def start(self, host: ChildHost, *, watch_shutdown: bool = True) -> Session:
        """Make the pipes, start a session on them and spawn the child (``spawn_error`` on failure)."""
        await self._wire_pipes()
        try:
            session = await host.serve_pipes(*self._session_fds, name=self.name, watch_shutdown=watch_shutdown)
        except BaseException:
            self._close_pipes()
            raise
        self._on_session(session)
        return session

    async def wait_end(self, host: ChildHost) -> asyncio.Task[None] | None:
        """Wait until the child and its session are over (the ordinary ``hostd run`` flow).

        Returns the task terminating the child when a stop signal came first."""
        session = self.session
        assert session is not None
        terminating: asyncio.Task[None] | None = None
        closed = asyncio.ensure_future(session.wait_closed())
        stop = asyncio.ensure_future(host.shutdown.wait())
        try:
            waits: set[asyncio.Future[Any]] = {closed, stop, self.exited}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if self.exited.done() and not closed.done():
                # The child exited: its stdout's EOF ends the session, unless a grandchild holds it.
                done, _ = await asyncio.wait({closed}, timeout=EXIT_DRAIN_S)
                if not done:
                    session.eof()
            elif stop.done() and not closed.done() and self.child is not None:
                # A stop signal: ask the plugin to stop while its session drains.
                terminating = asyncio.create_task(self.terminate(wait_first=False), name="terminate")
            await closed
        finally:
            closed.cancel()
            stop.cancel()
            self._close_pipes()
        return terminating

    def kill(self) -> None:
        if self.child is not None and not self.exited.done():
            self._signal_group(self.child.pid, signal.SIGKILL)

    def stop_group(self, kill_after_s: float) -> None:
        """SIGTERM to the child's process group now, SIGKILL after ``kill_after_s`` if it lives."""
        if self.child is None or self.exited.done():
            return
        self._signal_group(self.child.pid, signal.SIGTERM)
        asyncio.get_running_loop().call_later(kill_after_s, self.kill)

    async def _wire_pipes(self) -> None:
        """Make the child's stdio pipes (the daemon's stdio session gets the far ends) and start
        reading its stderr."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        err_r, err_w = os.pipe()
        self._session_fds = (from_child_r, to_child_w)
        self._pipes = {
            "stdin": to_child_r,
            "stdout": from_child_w,
            "stderr": err_w,
            "session_in": from_child_r,
            "session_out": to_child_w,
        }
        stderr = self._stderr = _StderrLines(self)
        loop = asyncio.get_running_loop()
        self._stderr_transport, _ = await loop.connect_read_pipe(lambda: stderr, os.fdopen(err_r, "rb", buffering=0))

    def _close_pipes(self) -> None:
        for fd in self._pipes.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pipes.clear()
        if self._stderr_transport is not None:
            self._stderr_transport.close()

    # Starting the child (called by the daemon once its stdio session is attached) ------------

    def _on_session(self, session: Session) -> None:
        self.session = session
        # The session holds its own duplicates of its pipe ends now: release ours, or the
        # child would never see EOF on its stdin when the session closes its side.
        for name in ("session_in", "session_out"):
            os.close(self._pipes.pop(name))
        env = dict(os.environ)
        env.pop("HOSTD_SOCKET", None)  # the plugin's channel is its stdio, not a socket
        prctl = _load_prctl()
        parent = os.getpid()
        try:
            self.child = subprocess.Popen(
                self.cmd,
                stdin=self._pipes["stdin"],
                stdout=self._pipes["stdout"],
                stderr=self._pipes["stderr"],
                env=env,
                close_fds=True,
                process_group=0,
                preexec_fn=lambda: _child_setup(prctl, parent),
            )
        except OSError as e:
            self.spawn_error = 127 if isinstance(e, FileNotFoundError) else 126
            # Not the whole command line: plugins take secrets as arguments too.
            self.logger.error("cannot start plugin", program=os.path.basename(self.cmd[0]), error=e.strerror or str(e))
            session.eof()
            return
        finally:
            for name in ("stdin", "stdout", "stderr"):
                os.close(self._pipes.pop(name))
        session.peer_pid, session.peer_uid = self.child.pid, os.getuid()
        self.logger.info("plugin started", plugin=session.plugin_id, session=session.id, pid=self.child.pid)
        self._watch_exit(self.child.pid)

    # Watching the child ----------------------------------------------------------------------

    def _watch_exit(self, pid: int) -> None:
        """Resolve ``_exited`` when the child exits, without reaping it (its pid stays its group's)."""
        loop = asyncio.get_running_loop()
        exited = self._exited
        assert exited is not None
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # old kernel: a thread waits instead
            threading.Thread(target=self._wait_thread, args=(pid, loop), name="hostd-child", daemon=True).start()
            return

        def readable() -> None:
            if _has_exited(pid):
                loop.remove_reader(pidfd)
                os.close(pidfd)
                if not exited.done():
                    exited.set_result(None)

        loop.add_reader(pidfd, readable)

    def _wait_thread(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(self._set_exited)

    def _set_exited(self) -> None:
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)

    def log_stderr(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").rstrip("\r")
        if not text.strip():
            return
        self.recent_stderr.append(text)
        session = self.session
        child = self.child
        self.logger.info(
            text,
            plugin=session.plugin_id if session is not None else None,
            session=session.id if session is not None else None,
            pid=child.pid if child is not None else None,
            source="stderr",
        )

    # Stopping the child ---------------------------------------------------------------------

    async def terminate(self, *, wait_first: bool) -> None:
        """End the child (its process group: SIGTERM, then SIGKILL after the grace), then reap it."""
        child, exited = self.child, self._exited
        if child is None or exited is None:
            return
        grace = self.config.shutdown_grace_s
        if wait_first and not exited.done():
            # The session ended on its own and the child has seen EOF on its stdin.
            await _wait_for(exited, grace)
        self._signal_group(child.pid, signal.SIGTERM)
        if not exited.done() and not await _wait_for(exited, grace):
            self.logger.warn("plugin did not stop in time; killing it", pid=child.pid, grace_s=grace)
            self._signal_group(child.pid, signal.SIGKILL)
            await exited
        returncode = child.wait()  # it has exited: this only reaps it
        if self._stderr is not None:
            await _wait_for(self._stderr.closed, STDERR_DRAIN_S)
        self.logger.info(
            "plugin exited",
            plugin=self.session.plugin_id if self.session is not None else None,
            pid=child.pid,
            code=exit_code(returncode),
            signal=_signal_name(-returncode) if returncode < 0 else None,
        )

    def _signal_group(self, pgid: int, sig: int) -> None:
        # The child is not reaped yet, so its pid is still its group's id and cannot be reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


class PluginRunner:
    """The child supervisor of ``hostd run -- CMD``: one plugin process, one session."""

    def __init__(self, config: Config, logger: Logger, cmd: list[str]) -> None:
        self.config = config
        self.logger = logger
        self.cmd = cmd

    async def supervise(self, host: ChildHost) -> int:
        """Start the child on a fresh session and return its exit status once both are over."""
        child = ChildProcess(self.config, self.logger, self.cmd, self.config.name)
        terminating: asyncio.Task[None] | None = None
        try:
            await child.start(host)
            terminating = await child.wait_end(host)
        finally:
            if terminating is not None:
                await terminating
            else:
                await child.terminate(wait_first=True)
        if child.spawn_error is not None:
            return child.spawn_error
        assert child.returncode is not None
        return exit_code(child.returncode)


def _child_setup(prctl: Callable[..., int] | None, parent: int) -> None:
    """Runs in the child between fork and exec: die with hostd, whichever way hostd dies."""
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # hostd died before the line above took effect
        os._exit(1)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _has_exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
    except ChildProcessError:
        return True


async def _wait_for(fut: asyncio.Future[Any] | asyncio.Event, timeout: float) -> bool:
    """True when ``fut`` finished (or ``event`` was set) within ``timeout`` seconds."""
    waiter: Any = fut.wait() if isinstance(fut, asyncio.Event) else asyncio.shield(fut)
    try:
        async with asyncio.timeout(timeout):
            await waiter
    except TimeoutError:
        return False
    return True


class _StderrLines(asyncio.Protocol):
    """The child's stderr, split into lines (at most 64 KiB each) for the log."""

    def __init__(self, runner: ChildProcess) -> None:
        self.runner = runner
        self.buffer = bytearray()
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        start = len(self.buffer)
        self.buffer += data
        while (i := self.buffer.find(b"\n", start)) >= 0:
            self.runner.log_stderr(bytes(self.buffer[:i]))
            del self.buffer[: i + 1]
            start = 0
        while len(self.buffer) > MAX_STDERR_LINE:
            self.runner.log_stderr(bytes(self.buffer[:MAX_STDERR_LINE]))
            del self.buffer[:MAX_STDERR_LINE]

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.buffer:
            self.runner.log_stderr(bytes(self.buffer))
            self.buffer.clear()
        self.closed.set()
