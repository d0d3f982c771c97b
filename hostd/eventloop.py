"""The event loop hostd runs on: uvloop when asked for (or, with ``auto``, when installed)."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable

from hostd.config import Config, ConfigError


def new_loop(choice: str) -> asyncio.AbstractEventLoop:
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ConfigError("--loop uvloop: uvloop is not installed (pip install 'hostd[fast]')") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def tune_gc() -> None:
    """Make cyclic GC pauses rare: a daemon holding 10,000 streams has a million live objects,
    and the default thresholds (a collection every 700 allocations, a full one every time the
    old generation grows by a quarter) spent seconds scanning them while those streams closed.
    Objects alive at start are frozen out of collection altogether, and collection turned
    (back) on: ``hostd.cli.main`` starts with it off."""
    gc.freeze()  # no collect first: ~5 ms of start-up for the little garbage there is
    gc.set_threshold(50_000, 20, 100)
    gc.enable()


def run_daemon(config: Config, main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main()`` to completion on the configured loop; returns its exit code."""
    loop = new_loop(config.loop)
    tune_gc()
    try:
        return int(loop.run_until_complete(main()))
    finally:
        # Shutdown is done: a repeated SIGTERM/SIGINT must not turn the clean exit into a kill
        # once the loop (and its signal handlers) are gone. loop.close() puts SIG_DFL back for
        # every handler it removes, so ignore the signals again after it.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        loop.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
