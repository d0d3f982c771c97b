"""SIGHUP: rebuild the configuration from the sources of the start and apply it live.

What applies without dropping a session or a stream: the log level, the limits (for new
calls, sessions and streams), the HTTP egress rules and timeouts, the model backend and
its key, the auth directory. Settings that need a restart (listen addresses, the event
loop, the plugin name) are logged as such. A configuration that does not load is refused
with its reason and the running one stays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hostd.config import Config, ConfigError, ReloadPlan, reload_plan

if TYPE_CHECKING:
    from hostd.server import Daemon


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
    plan = apply_config(daemon, fresh)
    logger.info("config reloaded", **plan.log_fields())


def apply_config(daemon: Daemon, fresh: Config) -> ReloadPlan:
    """Make ``fresh`` the running configuration, live, as far as it can be (also used by
    ``hostd bridge`` for the plugin block's ``args``)."""
    logger = daemon.logger
    old = daemon.services.config
    plan = reload_plan(old, fresh)
    services = daemon.services
    logger.apply_config(fresh)  # level, per-logger levels, format, byte bounds
    limits = fresh.limits
    streams = services.streams
    streams.max_per_session = limits.max_streams
    streams.idle_timeout_s = limits.stream_idle_timeout_s
    streams.buffer_pieces = limits.stream_buffer_pieces
    services.output_budget.limit = limits.max_total_output_bytes
    services.input_budget.limit = limits.max_total_input_bytes
    services.request_budget.limit = limits.max_total_request_bytes
    services.scan_budget.limit = limits.max_total_request_bytes
    services.config = fresh
    daemon.config = fresh
    services.reset_upstreams(
        http=old.http != fresh.http,
        model=old.model != fresh.model or old.model_api_key != fresh.model_api_key,
        auth=old.auth_dir != fresh.auth_dir,
    )
    for session in services.sessions:
        if session.dispatcher.max_in_flight is not None:
            session.dispatcher.max_in_flight = limits.max_in_flight
        session.outbox.max_bytes = limits.max_output_bytes
        if session.log_bucket is not None:
            session.log_bucket.configure(fresh.log.plugin_lines_per_s, fresh.log.plugin_burst)
    return plan
