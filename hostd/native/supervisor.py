"""Restart policy and registration replay for a native plugin worker (PROTOCOL §14, "Isolation").

This module decides; it never spawns, reads or writes anything, and imports nothing of the daemon:
``hostd run --native`` owns the worker process and its session and asks :class:`NativeSupervisor`
what to do at each step. All state changes are synchronous; the only coroutine is
:meth:`NativeSupervisor.wait`, the backoff sleep (a plain ``asyncio.sleep``, so cancelling the
daemon's task group cancels it).

What the driver (``hostd run --native``) calls, and when::

    sup = NativeSupervisor(restart=config_restart)        # --restart no → restart=False
    cmd = worker_command(path, name)                      # spawn with the session's pipes as stdin/stdout
    while True:
        proc = spawn(cmd)
        sup.started()                                     # 1. right after the spawn
        ... wait for the worker's hostd.hello (it is sent only after a successful load) ...
        if it exited before the hello:
            text = load_error(stderr_lines)               #    the proxy's words, or None
            if text is not None and sup.first_start:      #    a load error at the first start:
                exit 1 with `text`                        #    `hostd run` exits 1 with them
        elif (params := sup.replay_params()) is not None: # 2. before the worker takes calls
            ok = invoke plugin.register with params (fresh scope)
            if not ok:
                decision = sup.replay_failed(message)     #    counts as a crash
                kill the worker; (log, sleep, loop) as below
        sup.ready()                                       # 3. the worker takes calls now
        ... serve; every invoke answered while the worker is down or not ready:
            -32000 "plugin disconnected", data.code "plugin_unavailable", retryable ...
        on each successful invoke of plugin.register / plugin.reconfigure:
            sup.registration_succeeded(method, params, result)   # 4.
        returncode = await proc.wait()                    # negative -N for signal N (asyncio's way)
        decision = sup.died(returncode)                   # 5. not on hostd's own shutdown
        log decision.reason                               #    "native plugin worker died: signal SIGSEGV"
        if isinstance(decision, Exit): exit decision.code #    worker's code or 128+N
        await sup.wait(decision)                          #    the backoff

The backoff: 0.5 s before the first restart, doubling to 30 s; a worker that was up for 60 s
(from :meth:`started`) before it died resets it to 0.5 s.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hostd.native import LOAD_ERROR_PREFIX

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0
REGISTRATION_METHODS = frozenset({"plugin.register", "plugin.reconfigure"})
REPLAY_METHOD = "plugin.register"
REPLAY_KEYS = ("config_yaml", "schema_version")


def worker_command(path: str, name: str | None = None, python: str | None = None) -> list[str]:
    """The worker's command line: ``python -m hostd.native.worker PATH [--name ID]``."""
    cmd = [python or sys.executable, "-m", "hostd.native.worker", path]
    if name:
        cmd += ["--name", name]
    return cmd


def load_error_in_line(line: str | bytes) -> str | None:
    """The proxy's words when ``line`` (one line of the worker's stderr) reports a load error."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.rstrip("\r\n")
    return text[len(LOAD_ERROR_PREFIX) :] if text.startswith(LOAD_ERROR_PREFIX) else None


def load_error(stderr_lines: Iterable[str | bytes]) -> str | None:
    """The load error the worker reported (the proxy's words), from its stderr lines; else None."""
    found = None
    for line in stderr_lines:
        found = load_error_in_line(line) or found
    return found


def exit_code(returncode: int) -> int:
    """A child's status as a shell reports it: its exit code, or 128+N for signal N."""
    return returncode if returncode >= 0 else 128 - returncode


def describe_death(returncode: int) -> str:
    """``native plugin worker died: signal SIGSEGV`` or ``native plugin worker died: exit status 3``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"native plugin worker died: signal {name}"
    return f"native plugin worker died: exit status {returncode}"


@dataclass(frozen=True)
class Restart:
    """Start a new worker after ``delay`` seconds (``await supervisor.wait(decision)``)."""

    delay: float
    reason: str
    attempt: int


@dataclass(frozen=True)
class Exit:
    """Do not restart: ``hostd run`` exits with ``code``."""

    code: int
    reason: str


Decision = Restart | Exit


class NativeSupervisor:
    """The policy for one native plugin: when to restart, what to replay. See the module docstring."""

    def __init__(
        self,
        *,
        restart: bool = True,
        backoff_initial: float = BACKOFF_INITIAL_S,
        backoff_max: float = BACKOFF_MAX_S,
        stable_after: float = STABLE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.restart = restart
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self._clock = clock
        self._next_delay = backoff_initial
        self._started_at: float | None = None
        self.starts = 0
        self.restarts = 0
        self.is_ready = False
        self._decided: Decision | None = None  # this worker's end, once decided
        self._replay: dict[str, Any] | None = None
        self.registration: Any = None  # the last successful registration's result (for hostd.status)

    # -- lifecycle --

    @property
    def first_start(self) -> bool:
        """True while the current worker is the first one (a load error then ends ``hostd run``)."""
        return self.starts <= 1

    def started(self) -> None:
        """A worker process was spawned."""
        self.starts += 1
        self._started_at = self._clock()
        self.is_ready = False
        self._decided = None

    def ready(self) -> None:
        """The worker said hello and the replay (if any) succeeded: it takes calls now."""
        self.is_ready = True

    def died(self, returncode: int) -> Decision:
        """The worker ended (``returncode`` as asyncio gives it: -N for signal N).

        After :meth:`replay_failed` for the same worker, this returns that decision again: the
        kill that follows a failed replay is the same crash, not a second one.
        """
        if self._decided is not None:
            return self._decided
        return self._decide(returncode, describe_death(returncode))

    def replay_failed(self, message: str, returncode: int = 1) -> Decision:
        """The replayed ``plugin.register`` failed: a crash for the backoff (the driver kills the worker).

        ``died()`` for this worker then returns the same decision (counted once).
        """
        if self._decided is not None:
            return self._decided
        return self._decide(returncode, f"native plugin worker died: replay of {REPLAY_METHOD} failed: {message}")

    def _decide(self, returncode: int, reason: str) -> Decision:
        self._decided = self._decide_once(returncode, reason)
        return self._decided

    def _decide_once(self, returncode: int, reason: str) -> Decision:
        self.is_ready = False
        now = self._clock()
        if self._started_at is not None and now - self._started_at >= self.stable_after:
            self._next_delay = self.backoff_initial
        self._started_at = None
        if not self.restart:
            return Exit(exit_code(returncode), reason)
        delay = self._next_delay
        self._next_delay = min(self._next_delay * 2, self.backoff_max)
        self.restarts += 1
        return Restart(delay, reason, self.restarts)

    async def wait(self, decision: Restart) -> None:
        """The backoff before the restart ``decision`` asks for."""
        await asyncio.sleep(decision.delay)

    # -- registration --

    def registration_succeeded(self, method: str, params: Mapping[str, Any], result: Any = None) -> None:
        """An invoke of ``method`` with ``params`` (the invoker's params object) succeeded.

        Only ``plugin.register`` and ``plugin.reconfigure`` count; their ``config_yaml`` and
        ``schema_version`` are what a restarted worker gets replayed. Other methods are ignored, so
        the driver may call this for every successful invoke.
        """
        if method not in REGISTRATION_METHODS:
            return
        self._replay = {key: params[key] for key in REPLAY_KEYS if key in params}
        self.registration = result

    def replay_params(self) -> dict[str, Any] | None:
        """Params for the ``plugin.register`` replay (``{"config_yaml", "schema_version"}``), or None."""
        return None if self._replay is None else dict(self._replay)
