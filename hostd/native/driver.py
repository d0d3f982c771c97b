"""``hostd run --native PATH``: the child supervisor that keeps a native plugin's worker running.

It drives :class:`hostd.native.supervisor.NativeSupervisor` (the policy) with
:class:`hostd.runner.ChildProcess` (the process and its session), inside the daemon's task
group like any ``hostd run`` child:

- the worker (``python -m hostd.native.worker PATH --name ID``) gets a fresh plugin session;
  while it is starting, and until ``plugin.register`` has been replayed, invokes for its id
  are answered ``plugin disconnected`` with ``data.code`` ``plugin_unavailable``;
- a worker that dies (signal, ``abort()``, ``exit()``) is logged with its status; its session
  ends, so pending invokes fail ``plugin disconnected`` and its emit streams end with that
  error; it is restarted with backoff and the last successful registration is replayed
  under a fresh scope (a failed replay counts as a crash);
- a load error at the first start ends ``hostd run`` with exit 1 and the proxy's words;
- on shutdown the plugin is sent ``plugin.shutdown`` (bounded), then its input ends, and the
  worker calls the library's own ``shutdown`` before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

from hostd.config import Config
from hostd.errors import HostCallFailed
from hostd.logs import Logger
from hostd.native.naming import plugin_id_from_path
from hostd.native.supervisor import Decision, Exit, NativeSupervisor, exit_code, load_error, worker_command
from hostd.rpc.session import Session
from hostd.runner import ChildHost, ChildProcess

SHUTDOWN_CALL_S = 5.0
REPLAY_TIMEOUT_S = 600.0
HELLO_WAIT_S = 5.0


class NativeRunner:
    """Keeps one plugin process running: a native worker for ``path``, or, with ``cmd``, any
    JSON-RPC plugin command (``hostd bridge`` restarts those the same way, §15)."""

    def __init__(
        self,
        config: Config,
        logger: Logger,
        path: str = "",
        *,
        restart: bool = True,
        cmd: list[str] | None = None,
        name: str = "",
    ) -> None:
        self.config = config
        self.logger = logger
        self.path = path
        self.name = name or config.name or plugin_id_from_path(path)
        self.cmd = cmd or worker_command(path, self.name)
        self.what = "native plugin worker" if cmd is None else "plugin"
        self.policy = NativeSupervisor(restart=restart)
        self._replay_decision: Decision | None = None
        self.ready = asyncio.Event()  # the plugin serves (set again after each restart)
        self._stopping = False
        self._child: ChildProcess | None = None
        self.load_error_text: str | None = None

    async def supervise(self, host: ChildHost) -> int:
        registry = host.services.sessions

        def session_ended(session: Session) -> None:
            # From the moment its session ends until the next worker is ready, the id is unavailable.
            if session.plugin_id == self.name and not self._stopping:
                registry.unavailable.add(self.name)

        host.services.end_hooks.append(session_ended)
        while True:
            registry.unavailable.add(self.name)
            child = self._child = ChildProcess(self.config, self.logger, self.cmd, self.name)
            self.policy.started()
            session = await child.start(host, watch_shutdown=False)
            ready = asyncio.ensure_future(self._prepare(host, child, session))
            stop = asyncio.ensure_future(host.shutdown.wait())
            try:
                waits: set[asyncio.Future[Any]] = {child.exited, stop}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if stop.done() and not child.exited.done():
                    await self._stop(session)
            finally:
                stop.cancel()
                ready.cancel()
                with contextlib.suppress(BaseException):
                    await ready
            session.eof()
            await session.wait_closed()
            await child.terminate(wait_first=True)
            child._close_pipes()
            registry.unavailable.add(self.name)
            self.ready.clear()
            if child.spawn_error is not None:
                self.load_error_text = f"cannot start plugin: exit {child.spawn_error}"
                return child.spawn_error
            returncode = child.returncode if child.returncode is not None else 1
            if host.shutdown.is_set() or self._stopping:
                registry.unavailable.discard(self.name)
                return exit_code(returncode)
            if not session.hello_done:
                text = load_error(child.recent_stderr)
                if text is not None and self.policy.first_start:
                    self.load_error_text = text
                    self.logger.error("cannot load native plugin", plugin=self.name, error=text)
                    self.logger.flush()  # the operator's line must not land inside a log line
                    sys.stderr.write(f"hostd: {text}\n")
                    sys.stderr.flush()
                    registry.unavailable.discard(self.name)
                    return 1
            decision, self._replay_decision = self._replay_decision or self.policy.died(returncode), None
            reason = decision.reason.replace("native plugin worker", self.what, 1)
            self.logger.error(reason, plugin=self.name)
            if isinstance(decision, Exit):
                registry.unavailable.discard(self.name)
                return decision.code
            await self.policy.wait(decision)

    def stop_now(self, kill_after_s: float) -> None:
        """End the plugin's process group now (SIGTERM, SIGKILL after ``kill_after_s``); no restart."""
        self._stopping = True
        child = self._child
        if child is not None:
            child.stop_group(kill_after_s)

    async def _prepare(self, host: ChildHost, child: ChildProcess, session: Session) -> None:
        """Once the worker said hello: replay the registration, then let invokes in.

        A native worker says hello only after its library loaded. A JSON-RPC plugin need not say
        hello at all: with nothing to replay it serves at once (its requests queue in its pipe);
        before a replay it gets ``HELLO_WAIT_S`` to say hello, then counts as serving."""
        registry = host.services.sessions
        found = registry.registrations.get(self.name)
        if found is not None:
            self.policy.registration_succeeded(found.method, found.params, found.result)
        params = self.policy.replay_params()
        native = self.what.startswith("native")
        if native or params is not None:
            try:
                async with asyncio.timeout(None if native else HELLO_WAIT_S):
                    await session.hello_seen.wait()
            except TimeoutError:
                pass
        if params is not None:
            scopes = host.services.scopes
            scope = scopes.open(session.id)
            try:
                await session.peer.call("plugin.register", {**params, "host_callback_id": scope.id}, REPLAY_TIMEOUT_S)
            except (HostCallFailed, TimeoutError) as e:
                self.logger.error("replaying plugin.register failed", plugin=self.name, error=str(e))
                self._replay_decision = self.policy.replay_failed(str(e))
                child.kill()
                return
            finally:
                scopes.close(scope)
            self.logger.info("plugin.register replayed", plugin=self.name)
        self.policy.ready()
        registry.unavailable.discard(self.name)
        self.ready.set()

    async def _stop(self, session: Session) -> None:
        """hostd is stopping: ``plugin.shutdown`` (if the plugin answers it), then end its input."""
        with contextlib.suppress(Exception):
            await session.peer.call("plugin.shutdown", {}, SHUTDOWN_CALL_S)
