"""Wiring: build the services, open the listeners, run sessions, shut down cleanly.

The daemon owns one task group. In it run the listeners' sessions, the idle-stream reaper,
the systemd watchdog and, under ``hostd run``, the child supervisor. Fault boundaries held
here (PROTOCOL §4, DESIGN "Fault boundaries"):
- **session**: every session runs through :meth:`Daemon._run_session`, which catches
  everything but cancellation, logs it with the plugin id, releases what the session held
  and counts it (``totals.session_crashes``); no other session notices.
- **daemon component**: the reaper and the watchdog run through :meth:`Daemon._component`,
  which logs a crash and restarts the component after a short pause; a crash there never
  cancels the sessions.
- a connection's first bytes are never read before its session runs: reading is paused
  in ``connection_made`` and resumed by the session.

SIGTERM/SIGINT stop accepting and reading, close every stream, give in-flight calls
``shutdown_grace_s`` to finish, answer the rest ``hostd shutting down`` and cancel them,
remove the socket files. SIGHUP rebuilds the configuration from the sources it was built
from at start (see :meth:`Daemon.reload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from hostd.config import Config
from hostd.emit import EmitRegistry
from hostd.faults import log_fault
from hostd.handlers import control_methods, plugin_methods
from hostd.logs import Logger
from hostd.rpc.budget import Budget
from hostd.rpc.methods import Method
from hostd.rpc.session import Session
from hostd.scopes import ScopeRegistry
from hostd.services import Services
from hostd.streams import Counters, StreamTable
from hostd.systemd import Notifier, inherited_sockets
from hostd.transports import (
    SessionProtocol,
    StartupError,
    attach_stdio,
    bind_unix_socket,
    parse_unix_address,
    peer_credentials,
)

RESTART_PAUSE_S = 1.0


def raise_nofile_limit() -> None:
    """10,000 open streams need 10,000+ descriptors: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


def build_services(config: Config, logger: Logger) -> Services:
    counters = Counters()
    limits = config.limits
    streams = StreamTable(
        max_per_session=limits.max_streams,
        idle_timeout_s=limits.stream_idle_timeout_s,
        buffer_pieces=limits.stream_buffer_pieces,
        counters=counters,
        logger=logger,
    )
    services = Services(
        config=config,
        logger=logger,
        streams=streams,
        scopes=ScopeRegistry(),
        counters=counters,
        emit=EmitRegistry(),
        output_budget=Budget(limits.max_total_output_bytes),
        input_budget=Budget(limits.max_total_input_bytes),
        request_budget=Budget(limits.max_total_request_bytes),
        scan_budget=Budget(limits.max_total_request_bytes),  # a count of its own (rpc/long_lines.py)
    )
    # Session-end cleanup, in this order: streams first (their upstream connections drop at
    # once), then scopes (closing the model streams bound to them), then the emit links the
    # session was reading.

    def close_streams(session: Session) -> None:
        services.streams.close_owned(session, "session ended")

    def close_scopes(session: Session) -> None:
        services.scopes.close_session(session.id)

    services.end_hooks += [close_streams, close_scopes, services.emit.close_reader]

    def close_operations(session: Session) -> None:
        services.operations.close_session(session.id)

    services.end_hooks.append(close_operations)
    return services


class ChildSupervisor(Protocol):
    """``hostd run``'s child (a plugin command or a native worker), run inside the daemon."""

    async def supervise(self, daemon: Daemon) -> int: ...


class Daemon:
    def __init__(self, config: Config, logger: Logger, reload: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.logger = logger
        self.shutdown = asyncio.Event()
        self.notifier = Notifier()
        self.services = build_services(config, logger)
        self._reload_source = reload
        self._socket_paths: list[str] = []
        self._servers: list[asyncio.Server] = []
        self._tg: asyncio.TaskGroup | None = None
        self._session_tasks: set[asyncio.Task[None]] = set()
        self._last_refusal = 0.0
        # The methods plugin sessions serve (``hostd bridge`` swaps in its relaying table).
        self.plugin_table: Mapping[str, Method[Any]] = plugin_methods()

    # Listening ------------------------------------------------------------------------------

    def _open_sockets(self, with_child: bool) -> tuple[list[socket.socket], list[socket.socket]]:
        """(plugin sockets, control sockets): inherited from systemd, or created here.

        ``hostd run``'s plugin lives on its stdio, so it may inherit a control socket alone."""
        plugin, control = inherited_sockets(require_plugin=not with_child)
        if plugin or control:
            self.logger.info("using sockets from systemd", plugin=len(plugin), control=len(control))
            self.services.listen = ["systemd"]
            return plugin, control
        plugin = []
        control = []
        mode = self.config.socket_mode_bits
        if self.config.listen != "stdio":
            path = parse_unix_address(self.config.listen)
            plugin.append(bind_unix_socket(path, mode))
            self._socket_paths.append(path)
        if self.config.control:
            path = parse_unix_address(self.config.control)
            control.append(bind_unix_socket(path, 0o600))
            self._socket_paths.append(path)
        self.services.listen = [self.config.listen]
        return plugin, control

    async def _serve_socket(self, sock: socket.socket, kind: str, methods: Mapping[str, Method[Any]]) -> None:
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.Protocol:
            return _Accepted(self, kind, methods)

        server = await loop.create_unix_server(factory, sock=sock)
        self._servers.append(server)

    def admit(self) -> bool:
        """Room for one more session (``limits.max_sessions``); warns, rate-limited, when not."""
        if len(self.services.sessions) < self.services.config.limits.max_sessions:
            return True
        now = time.monotonic()
        if now - self._last_refusal >= 1.0:
            self._last_refusal = now
            self.logger.warn("connection refused: too many sessions", limit=self.services.config.limits.max_sessions)
        return False

    def start_session(self, session: Session, watch_shutdown: bool = True) -> asyncio.Task[None]:
        assert self._tg is not None
        task = self._tg.create_task(self._run_session(session, watch_shutdown), name=session.id)
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)
        return task

    async def _run_session(self, session: Session, watch_shutdown: bool = True) -> None:
        """The session boundary: whatever escapes a session ends that session alone."""
        try:
            await session.run(self.shutdown if watch_shutdown else None, self.config.shutdown_grace_s)
        except Exception as e:
            self.services.counters.session_crashes += 1
            log_fault(self.logger, "session crashed", e, session=session.id, plugin=session.plugin_id)
            with contextlib.suppress(Exception):
                session.close("crashed")
                session._finish()

    async def serve_pipes(
        self,
        read_fd: int,
        write_fd: int,
        *,
        name: str = "",
        watch_shutdown: bool = True,
        kind: str = "plugin",
        methods: Mapping[str, Method[Any]] | None = None,
        max_in_flight: int | None = -1,
    ) -> Session:
        """Start a plugin session on a pair of pipes (``hostd run``'s child); it runs in the
        daemon's task group under the session boundary. The pipes are duplicated. With
        ``watch_shutdown=False`` the session ignores the daemon's shutdown and ends at EOF
        (its supervisor ends it: a native worker is told ``plugin.shutdown`` first)."""
        table = methods if methods is not None else self.plugin_table
        session = Session(self.services, table, kind=kind, name=name, max_in_flight=max_in_flight)
        release = await attach_stdio(session, read_fd, write_fd)
        self.start_session(session, watch_shutdown).add_done_callback(lambda _t: release())
        return session

    # Running --------------------------------------------------------------------------------

    async def run(self, child: ChildSupervisor | None = None, stdio_fds: tuple[int, int] = (0, 1)) -> int:
        """Serve until shutdown; returns the exit code (the child's, under ``hostd run``)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        plugin_socks, control_socks = self._open_sockets(child is not None)
        exit_code = 0
        stdio_session = child is None and self.config.listen == "stdio" and not plugin_socks
        if stdio_session:
            _check_stdio(stdio_fds)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                background = [tg.create_task(self._component("reaper", self.services.streams.run_reaper))]
                if self.notifier.watchdog_interval_s:
                    background.append(tg.create_task(self._component("watchdog", self._watchdog)))
                for sock in plugin_socks:
                    await self._serve_socket(sock, "plugin", self.plugin_table)
                for sock in control_socks:
                    await self._serve_socket(sock, "control", control_methods())
                stdio: Session | None = None
                if stdio_session:
                    stdio = await self.serve_pipes(*stdio_fds, name=self.config.name)
                self.logger.info(
                    "hostd ready",
                    listen=self.services.listen[0] if self.services.listen else None,
                    control=self.config.control or None,
                    pid=os.getpid(),
                )
                self.notifier.notify("READY=1\nSTATUS=ready")
                if child is not None:
                    exit_code = await self._supervise(child)
                    self.shutdown.set()
                elif stdio is not None:
                    await _first(stdio.wait_closed(), self.shutdown.wait())
                    self.shutdown.set()
                else:
                    await self.shutdown.wait()
                self.notifier.notify("STOPPING=1")
                self.logger.info("hostd stopping", sessions=len(self.services.sessions))
                for server in self._servers:
                    server.close()
                self._remove_socket_files()
                # Sessions see the shutdown event themselves; wait for them, then stop the rest.
                if self._session_tasks:
                    await asyncio.wait(set(self._session_tasks))
                for task in background:
                    task.cancel()
        finally:
            self._remove_socket_files()
            await self.services.aclose()
            self.logger.info("hostd stopped", calls=self.services.counters.calls, exit_code=exit_code)
        return exit_code

    async def _supervise(self, child: ChildSupervisor) -> int:
        try:
            return await child.supervise(self)
        except Exception as e:
            log_fault(self.logger, "child supervisor failed", e)
            return 1

    async def _component(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """The daemon-component boundary: a crash is logged and the component restarted."""
        while True:
            try:
                await fn()
                return
            except Exception as e:
                log_fault(self.logger, "daemon component crashed; restarting it", e, component=name)
                await asyncio.sleep(RESTART_PAUSE_S)

    def _on_stop_signal(self, sig: int) -> None:
        if not self.shutdown.is_set():
            self.logger.info("signal received, shutting down", signal=signal.Signals(sig).name)
            self.shutdown.set()

    def reload(self) -> None:
        """SIGHUP: rebuild the configuration from the start's sources and apply what can change live."""
        from hostd.reload import apply_reload  # only on SIGHUP

        self.notifier.notify("RELOADING=1")
        try:
            apply_reload(self)
        except Exception as e:
            log_fault(self.logger, "config reload failed; keeping the running config", e)
        self.notifier.notify("READY=1")

    def apply_config(self, config: Config) -> None:
        """Run with ``config`` from now on, as a reload would (``hostd bridge``'s plugin args)."""
        from hostd.reload import apply_config  # only hostd bridge and SIGHUP need it

        apply_config(self, config)

    async def _watchdog(self) -> None:
        assert self.notifier.watchdog_interval_s is not None
        while True:
            streams = len(self.services.streams)
            sessions = len(self.services.sessions)
            self.notifier.notify(f"WATCHDOG=1\nSTATUS={sessions} sessions, {streams} open streams")
            await asyncio.sleep(self.notifier.watchdog_interval_s)

    def _remove_socket_files(self) -> None:
        for path in self._socket_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._socket_paths.clear()


def _check_stdio(fds: tuple[int, int]) -> None:
    """A stdio session needs a peer: refuse stdin on /dev/null (systemd's default) or a tty."""
    try:
        st = os.fstat(fds[0])
    except OSError as e:
        raise StartupError(f"stdin is not usable for a stdio session: {e.strerror}") from None
    if stat.S_ISCHR(st.st_mode):
        raise StartupError(
            "stdin is a character device (/dev/null or a terminal), not a plugin: "
            "use --listen unix:PATH, socket activation, or run hostd from the plugin"
        )


async def _first(*aws: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


class _Accepted(SessionProtocol):
    """A freshly accepted connection: checks the peer, then starts its session."""

    def __init__(self, daemon: Daemon, kind: str, methods: Mapping[str, Method[Any]]) -> None:
        self.daemon = daemon
        self.kind = kind
        self.methods = methods
        self.session = None  # type: ignore[assignment]

    def connection_made(self, transport: Any) -> None:
        transport.pause_reading()  # nothing is read until the session runs
        daemon = self.daemon
        try:
            sock = transport.get_extra_info("socket")
            pid, uid = peer_credentials(sock) if sock is not None else (None, None)
            allowed = daemon.services.config.allowed_uids  # read per connection: a reload applies
            if allowed and uid not in allowed:
                daemon.logger.warn("connection refused: peer uid not allowed", peer_uid=uid, peer_pid=pid)
                transport.abort()
                return
            if not daemon.admit():
                transport.close()
                return
            session = Session(daemon.services, self.methods, kind=self.kind, peer_pid=pid, peer_uid=uid)
            session.attach(transport, transport)
            self.session = session
            daemon.start_session(session)
        except Exception as e:  # the accept boundary: this connection alone is dropped
            log_fault(daemon.logger, "accepting a connection failed", e)
            with contextlib.suppress(Exception):
                transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.session is not None:  # None: refused (uvloop may still hand over bytes)
            self.session.feed(data)

    def eof_received(self) -> bool:
        if self.session is not None:
            self.session.eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:  # None: refused in connection_made
            self.session.lost(exc)


__all__ = ["ChildSupervisor", "Daemon", "StartupError", "build_services", "raise_nofile_limit"]
