"""``hostd bridge``: hostd's side of hostd-bridge.so (PROTOCOL §15).

The bridge (inside the proxy) starts ``hostd bridge`` with a socketpair on its stdin/stdout.
That connection is a control session with no ``max_in_flight`` (the proxy's own concurrency
bounds it) and one more method, ``hostd.bridge.start``, which reads the plugin's ``hostd``
block, starts the plugin (a command, or a native library in a worker) under the plugin id the
bridge names, and answers ``{"timeout_s"}`` once the plugin serves. Problems, a native load
error included, are -32000 with ``data.code`` ``invalid_config`` and ``hostd: <reason>``.

While it runs, ``host.*`` calls of the relayed families go to the bridge as requests on that
same session (:mod:`hostd.handlers.relay`); streams the proxy opened for the plugin are closed
through the bridge when the plugin's session ends. A dead plugin is restarted with §14's
backoff and register replay. When the bridge's session ends (the proxy unloaded the plugin,
or died), the plugin's process group ends at once and hostd exits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from hostd.bridge.spec import BridgeConfigError, BridgeSpec, decode_config_yaml, parse_bridge_spec
from hostd.config import Config, ConfigError
from hostd.errors import HostCallFailed
from hostd.handlers import bridge as _bridge_handlers
from hostd.handlers import control_methods, plugin_methods
from hostd.handlers.relay import relay_table
from hostd.logs import Logger
from hostd.native.driver import NativeRunner
from hostd.rpc.methods import Method
from hostd.rpc.registry import PLUGIN_ID
from hostd.rpc.session import Session

if TYPE_CHECKING:
    from hostd.services import Services

STOP_KILL_AFTER_S = 1.0


class BridgeDaemon(Protocol):
    shutdown: asyncio.Event
    plugin_table: Mapping[str, Method[Any]]

    def apply_config(self, config: Config) -> None: ...

    @property
    def services(self) -> Services: ...

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
    ) -> Session: ...


def invalid(reason: str) -> HostCallFailed:
    return HostCallFailed(f"hostd: {reason}", data_code="invalid_config")


class BridgeHost:
    """The child supervisor of ``hostd bridge``: the bridge's session and the one plugin behind it."""

    def __init__(self, config: Config, logger: Logger, options: Callable[[list[str]], Config]) -> None:
        self.config = config
        self.logger = logger
        self.options = options  # hostd run options (the block's ``args``) → a Config
        self.spec: BridgeSpec | None = None
        self.timeout_s = 600.0
        self._daemon: BridgeDaemon | None = None
        self._session: Session | None = None
        self._runner: NativeRunner | None = None
        self._runner_task: asyncio.Task[int] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._start_lock = asyncio.Lock()
        self._relayed: dict[str, set[tuple[str, str]]] = {}

    async def supervise(self, daemon: BridgeDaemon) -> int:
        self._daemon = daemon
        services = daemon.services
        services.bridge = self
        services.end_hooks.append(self._plugin_session_ended)
        methods = {**control_methods(), **{m.name: m for m in _bridge_handlers.METHODS}}
        session = await daemon.serve_pipes(
            0, 1, kind="control", methods=methods, max_in_flight=None, watch_shutdown=False
        )
        self._session = session
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            closed = asyncio.ensure_future(session.wait_closed())
            stop = asyncio.ensure_future(daemon.shutdown.wait())
            try:
                await asyncio.wait({closed, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                stop.cancel()
            # The bridge is gone (or hostd is stopping): the plugin ends now, no grace period.
            await self._stop_plugin()
            session.eof()
        return 0

    # hostd.bridge.start -------------------------------------------------------------------

    async def start(self, plugin_id: str, config_yaml: str) -> dict[str, Any]:
        try:
            spec = parse_bridge_spec(decode_config_yaml(config_yaml))
        except BridgeConfigError as e:
            raise HostCallFailed(str(e), data_code=e.code) from None
        if not PLUGIN_ID.fullmatch(plugin_id.strip()):
            raise invalid(f"invalid plugin id {plugin_id!r}")
        async with self._start_lock:
            task = self._runner_task
            if spec == self.spec and task is not None and not task.done():
                return {"timeout_s": spec.timeout_s}  # a reconfigure that left the block alone
            await self._stop_plugin()
            try:
                config = self.options(list(spec.args))
            except ConfigError as e:
                raise invalid(str(e).splitlines()[0]) from None
            config = msgspec.structs.replace(config, name=plugin_id.strip())
            daemon = self._daemon
            assert daemon is not None and self._tg is not None
            daemon.apply_config(config)
            daemon.plugin_table = relay_table(plugin_methods(), spec.relay, self)
            self.spec, self.timeout_s = spec, spec.timeout_s
            cmd = list(spec.command) if spec.command else None
            runner = NativeRunner(config, self.logger, spec.native or "", cmd=cmd, name=config.name)
            self._runner = runner
            self._runner_task = self._tg.create_task(runner.supervise(daemon), name="bridged-plugin")
            ready = asyncio.ensure_future(runner.ready.wait())
            try:
                await asyncio.wait({ready, self._runner_task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
            if not runner.ready.is_set():
                raise invalid(runner.load_error_text or "the plugin exited while starting")
            self.logger.info("bridged plugin started", plugin=config.name, native=bool(spec.native))
            return {"timeout_s": spec.timeout_s}

    async def _stop_plugin(self) -> None:
        runner, task = self._runner, self._runner_task
        self._runner = self._runner_task = None
        if runner is None or task is None:
            return
        runner.stop_now(STOP_KILL_AFTER_S)
        with contextlib.suppress(Exception):
            await task

    # Relay ----------------------------------------------------------------------------------

    async def relay(self, method: str, params: dict[str, Any]) -> Any:
        session = self._session
        if session is None or session.closing:
            raise HostCallFailed(f"host call {method} failed")
        try:
            return await session.peer.call(method, params, self.timeout_s)
        except TimeoutError:
            raise HostCallFailed(f"host call {method} failed") from None

    def opened(self, session: Session, close_method: str, stream_id: str) -> None:
        self._relayed.setdefault(session.id, set()).add((close_method, stream_id))

    def closed(self, session: Session, close_method: str, stream_id: str) -> None:
        self._relayed.get(session.id, set()).discard((close_method, stream_id))

    def _plugin_session_ended(self, session: Session) -> None:
        """Nothing the plugin opened in the proxy stays open after its session."""
        left = self._relayed.pop(session.id, set())
        bridge = self._session
        if not left or bridge is None or bridge.closing:
            return
        for close_method, stream_id in left:
            bridge.spawn(self._close_quietly(close_method, stream_id), name="relayed-close")

    async def _close_quietly(self, method: str, stream_id: str) -> None:
        with contextlib.suppress(HostCallFailed, TimeoutError):
            await self.relay(method, {"stream_id": stream_id})
