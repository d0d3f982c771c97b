"""The event loop hostd runs on: uvloop when asked for (or, with ``auto``, when installed)."""

from __future__ import annotations

import asyncio
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


def run_daemon(config: Config, main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main()`` to completion on the configured loop; returns its exit code."""
    loop = new_loop(config.loop)
    try:
        return int(loop.run_until_complete(main()))
    finally:
        loop.close()
