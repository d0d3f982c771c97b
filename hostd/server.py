"""Wiring: build the services, open the listeners, run sessions, shut down cleanly.

The daemon owns one task group: listeners' sessions, the idle-stream reaper and the
systemd watchdog all live in it. SIGTERM/SIGINT stop accepting and reading, close every
stream, give in-flight calls ``shutdown_grace_s`` to finish, cancel the rest and remove
the socket files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
from collections.abc import Callable, Mapping
from typing import Any

from hostd.config import Config
from hostd.handlers import control_methods, plugin_methods
from hostd.handlers.base import Method
from hostd.logs import Logger
from hostd.rpc.session import Session
from hostd.scopes import ScopeRegistry
from hostd.services import Services
from hostd.streams import Counters, StreamTable
from hostd.systemd import Notifier
from hostd.transports import (
    SessionProtocol,
    StartupError,
    attach_stdio,
    bind_unix_socket,
    inherited_sockets,
    parse_unix_address,
    peer_credentials,
)
from hostd.upstream.credentials import CredentialStore
from hostd.upstream.http_client import HttpUpstream
from hostd.upstream.model_backend import ModelBackend


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
        http=HttpUpstream(config.http, logger),
    )
    _attach_optional_families(services)
    return services


def _attach_optional_families(services: Services) -> None:
    """Model backend and credential store, when their modules and configuration exist."""
    if services.config.model.base_url:
        services.model = ModelBackend(services.config, services.logger)
    if services.config.auth_dir:
        services.auth = CredentialStore(services.config.auth_dir)


class Daemon:
    def __init__(self, config: Config, logger: Logger) -> None:
        self.config = config
        self.logger = logger
        self.shutdown = asyncio.Event()
        self.notifier = Notifier()
        self.services = build_services(config, logger)
        self._socket_paths: list[str] = []
        self._servers: list[asyncio.Server] = []
        self._tg: asyncio.TaskGroup | None = None
        self._session_tasks: set[asyncio.Task[None]] = set()

    # Listening ------------------------------------------------------------------------

    def _open_sockets(self) -> tuple[list[socket.socket], list[socket.socket]]:
        """(plugin sockets, control sockets): inherited from systemd, or created here."""
        inherited = inherited_sockets()
        if inherited:
            control = [s for name, s in inherited.items() if name == "control"]
            plugin = [s for name, s in inherited.items() if name != "control"]
            self.logger.info("using sockets from systemd", count=len(inherited))
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
        return plugin, control

    async def _serve_socket(self, sock: socket.socket, kind: str, methods: Mapping[str, Method[Any]]) -> None:
        loop = asyncio.get_running_loop()
        allowed = set(self.config.allowed_uids)

        def factory() -> asyncio.Protocol:
            return _Accepted(self, kind, methods, allowed)

        server = await loop.create_unix_server(factory, sock=sock)
        self._servers.append(server)

    def start_session(self, session: Session) -> None:
        assert self._tg is not None
        task = self._tg.create_task(session.run(self.shutdown, self.config.shutdown_grace_s), name=session.id)
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)

    # Running --------------------------------------------------------------------------

    async def run(
        self, stdio_session: Callable[[Session], Any] | None = None, stdio_fds: tuple[int, int] = (0, 1)
    ) -> int:
        """Serve until shutdown. ``stdio_fds`` (read, write) carry the stdio session: the process's
        own stdin/stdout for ``hostd serve``, a spawned plugin's pipes for ``hostd run``."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)
        plugin_socks, control_socks = self._open_sockets()
        exit_code = 0
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                background = [tg.create_task(self.services.streams.run_reaper(), name="reaper")]
                if self.notifier.watchdog_interval_s:
                    background.append(tg.create_task(self._watchdog(), name="watchdog"))
                for sock in plugin_socks:
                    await self._serve_socket(sock, "plugin", plugin_methods())
                for sock in control_socks:
                    await self._serve_socket(sock, "control", control_methods())
                stdio = None
                if stdio_session is not None or (self.config.listen == "stdio" and not plugin_socks):
                    stdio = Session(self.services, plugin_methods(), name=self.config.name)
                    release = await attach_stdio(stdio, *stdio_fds)
                    stdio.on_close.append(lambda _s: release())
                self.logger.info(
                    "hostd ready",
                    listen=self.config.listen if not plugin_socks or self._socket_paths else "systemd",
                    control=self.config.control or None,
                    pid=os.getpid(),
                )
                self.notifier.notify("READY=1\nSTATUS=ready")
                if stdio is not None:
                    if stdio_session is not None:
                        stdio_session(stdio)
                    await stdio.run(self.shutdown, self.config.shutdown_grace_s)
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
            await self.services.http.aclose()
            if self.services.model is not None:
                await self.services.model.aclose()
        return exit_code

    def _on_stop_signal(self, sig: int) -> None:
        if not self.shutdown.is_set():
            self.logger.info("signal received, shutting down", signal=signal.Signals(sig).name)
            self.shutdown.set()

    def _on_reload(self) -> None:
        from hostd.config import ConfigError, load_config

        self.notifier.notify("RELOADING=1")
        try:
            fresh = load_config()
        except ConfigError as e:
            self.logger.error("config reload failed; keeping the running config", error=str(e))
        else:
            self.logger.set_level(fresh.log_level)
            self.logger.info("config reloaded (log level applied; other changes need a restart)")
        self.notifier.notify("READY=1")

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


class _Accepted(SessionProtocol):
    """A freshly accepted connection: checks the peer, then starts its session."""

    def __init__(self, daemon: Daemon, kind: str, methods: Mapping[str, Method[Any]], allowed: set[int]) -> None:
        self.daemon = daemon
        self.kind = kind
        self.methods = methods
        self.allowed = allowed

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        pid, uid = peer_credentials(sock) if sock is not None else (None, None)
        if self.allowed and uid not in self.allowed:
            self.daemon.logger.warn("connection refused: peer uid not allowed", peer_uid=uid, peer_pid=pid)
            transport.abort()
            self.session = None  # type: ignore[assignment]
            return
        self.session = Session(self.daemon.services, self.methods, kind=self.kind, peer_pid=pid, peer_uid=uid)
        self.session.attach(transport, transport)
        self.daemon.start_session(self.session)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:  # None: refused in connection_made (nothing is read after)
            self.session.lost(exc)


__all__ = ["Daemon", "StartupError", "build_services", "raise_nofile_limit"]
