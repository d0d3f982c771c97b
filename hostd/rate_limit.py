"""Rate limits: a token bucket for ``host.log`` lines, one per session.

It only counts and decides; it never sleeps, never logs (the caller writes the warning it
says is due) and is not thread-safe: it is used on the event loop only. :data:`SessionBucket`
is the class host.log's buckets are made of: ``hostd._logline.Bucket`` (the same bucket in C,
which the C log writer takes tokens from itself) where the package was built with a compiler,
else :class:`TokenBucket`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING


class TokenBucket:
    """A rate limit: ``rate_per_s`` lines per second with bursts of ``burst``.

    ``take()`` says whether one more line may be written; refused lines are counted, and
    ``warning_due()`` returns how many were refused since the last warning when a warning
    may be written now (at most one per second), else 0. Not thread-safe: one per session,
    used on the event loop.
    """

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._tokens = self.burst
        self._last = clock()
        self.dropped = 0
        self._unreported = 0
        self._last_warning: float | None = None

    def configure(self, rate_per_s: float, burst: float) -> None:
        """New limits (a reload); the tokens already saved are kept, up to the new burst."""
        self._refill()
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._tokens = min(self._tokens, self.burst)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._last
        self._last = now
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)

    def take(self) -> bool:
        # _refill inlined: take() runs once per written host.log line.
        now = self._clock()
        elapsed = now - self._last
        self._last = now
        tokens = self._tokens
        if elapsed > 0:
            tokens += elapsed * self.rate_per_s
            if tokens > self.burst:
                tokens = self.burst
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        self.dropped += 1
        self._unreported += 1
        return False

    def warning_due(self) -> int:
        if not self._unreported:
            return 0
        now = self._clock()
        if self._last_warning is not None and now - self._last_warning < 1.0:
            return 0
        count, self._unreported = self._unreported, 0
        self._last_warning = now
        return count


if TYPE_CHECKING:
    SessionBucket = TokenBucket
else:
    try:
        from hostd._logline import Bucket as SessionBucket
    except ImportError:  # built without a C compiler
        SessionBucket = TokenBucket
