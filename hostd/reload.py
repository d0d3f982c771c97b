"""SIGHUP: rebuild the configuration from the sources of the start and apply it live.

What applies without dropping a session or a stream: the log level, the limits (for new
calls, sessions and streams), the HTTP egress rules and timeouts, the model backend and
its key, the auth directory. Settings that need a restart (listen addresses, the event
loop, the plugin name) are logged as such. A configuration that does not load is refused
with its reason and the running one stays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hostd.config import ConfigError

if TYPE_CHECKING:
    from hostd.server import Daemon

RESTART_KEYS = ("listen", "control", "socket_mode", "loop", "name", "allowed_uids")


def apply_reload(daemon: Daemon) -> None:
    logger = daemon.logger
    if daemon._reload_source is None:
        logger.warn("config reload ignored: this hostd was not started from reloadable sources")
        return
    try:
        fresh = daemon._reload_source()
    except ConfigError as e:
        logger.error("config reload failed; keeping the running config", error=str(e))
        return
    old = daemon.services.config
    needs_restart = [key for key in RESTART_KEYS if getattr(old, key) != getattr(fresh, key)]
    services = daemon.services
    logger.set_level(fresh.log_level)
    limits = fresh.limits
    streams = services.streams
    streams.max_per_session = limits.max_streams
    streams.idle_timeout_s = limits.stream_idle_timeout_s
    streams.buffer_pieces = limits.stream_buffer_pieces
    services.output_budget.limit = limits.max_total_output_bytes
    services.input_budget.limit = limits.max_total_input_bytes
    services.config = fresh
    daemon.config = fresh
    for session in services.sessions:
        if session.dispatcher.max_in_flight is not None:
            session.dispatcher.max_in_flight = limits.max_in_flight
        session.outbox.max_bytes = limits.max_output_bytes
    logger.info(
        "config reloaded",
        log_level=fresh.log_level,
        needs_restart=needs_restart or None,
    )
