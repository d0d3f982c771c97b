"""Structured logging: one JSON object per line on stderr, secrets redacted, never blocking.

Lines are filtered by level before anything is formatted, then handed to a writer thread
through a bounded queue; when stderr is slower than the daemon, lines are dropped and
counted rather than stalling the event loop.
"""

from __future__ import annotations

import collections
import functools
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson

LEVELS = {"trace": 5, "debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40}
LEVEL_NAMES = {5: "trace", 10: "debug", 20: "info", 30: "warn", 40: "error"}

REDACTED = "[redacted]"
BATCH_DELAY_S = 0.005
_SECRET_WORDS = ("authorization", "cookie", "token", "secret", "password", "apikey")


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True for keys whose values must never be logged (case and ``-``/``_`` ignored)."""
    folded = key.lower().replace("-", "").replace("_", "")
    return any(word in folded for word in _SECRET_WORDS)


def redact(value: Any) -> Any:
    """A copy of ``value`` with every value under a secret-looking key replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def redact_headers(headers: dict[str, list[str]] | None) -> dict[str, Any]:
    return redact(dict(headers or {}))  # type: ignore[no-any-return]


class Logger:
    """The process-wide logger. ``log`` is safe to call from the event loop at any rate."""

    def __init__(self, level: str = "info", fd: int | None = None, max_queued: int = 10_000) -> None:
        self.threshold = LEVELS.get(level.lower(), 20)
        self.dropped = 0
        self._fd = sys.stderr.fileno() if fd is None else fd
        self._queue: collections.deque[bytes] = collections.deque()
        self._max_queued = max_queued
        self._wake = threading.Event()
        self._stopping = False
        self._second = -1
        self._second_text = ""
        self._thread = threading.Thread(target=self._drain, name="hostd-log", daemon=True)
        self._thread.start()

    def _timestamp(self) -> str:
        """UTC with milliseconds, ``2026-11-25T12:00:00.123Z``; the formatted second is reused."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((now - second) * 1000):03d}Z"

    def set_level(self, level: str) -> None:
        self.threshold = LEVELS.get(level.lower(), 20)

    def enabled(self, level: int) -> bool:
        return level >= self.threshold

    def log(self, level: int, msg: str, **fields: Any) -> None:
        if level < self.threshold:
            return
        record: dict[str, Any] = {"ts": self._timestamp(), "level": LEVEL_NAMES.get(level, "debug"), "msg": msg}
        for key, value in fields.items():
            if value is None:
                continue
            record[key] = REDACTED if is_secret_key(key) else redact(value)
        self.emit_record(record)

    def emit_record(self, record: dict[str, Any]) -> None:
        """Queue an already-redacted record; a ``ts`` of None is filled in."""
        if record.get("ts") is None:
            record["ts"] = self._timestamp()
        if len(self._queue) >= self._max_queued:
            self.dropped += 1
            return
        line = orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE)
        self._queue.append(line)
        if not self._wake.is_set():
            self._wake.set()

    def trace(self, msg: str, **fields: Any) -> None:
        self.log(5, msg, **fields)

    def debug(self, msg: str, **fields: Any) -> None:
        self.log(10, msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self.log(20, msg, **fields)

    def warn(self, msg: str, **fields: Any) -> None:
        self.log(30, msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log(40, msg, **fields)

    def _drain(self) -> None:
        while True:
            self._wake.wait()
            if not self._stopping:
                # Let a burst gather: one wake-up and one write per few milliseconds, rather than
                # a thread switch (and a fight for the GIL) per line.
                time.sleep(BATCH_DELAY_S)
            self._wake.clear()
            while self._queue:
                chunk = [self._queue.popleft() for _ in range(min(len(self._queue), 256))]
                data = b"".join(chunk)
                try:
                    while data:
                        data = data[os.write(self._fd, data) :]
                except OSError:
                    pass
            if self._stopping:
                return

    def flush(self, timeout: float = 2.0) -> None:
        """Write out what is queued (used at exit); gives up after ``timeout``."""
        deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))


_logger: Logger | None = None


def get_logger() -> Logger:
    """The process-wide logger (created on first use at level info)."""
    global _logger
    if _logger is None:
        _logger = Logger()
    return _logger


def configure(level: str) -> Logger:
    logger = get_logger()
    logger.set_level(level)
    return logger
