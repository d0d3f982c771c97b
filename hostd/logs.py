"""Structured logging on stderr: JSON or text lines, secrets redacted, bounded, never blocking.

Lines are filtered by level before anything is formatted, encoded on the caller's thread and
handed to a writer thread through a queue bounded in lines and bytes; when stderr is slower
than the daemon, lines are dropped and counted rather than stalling the event loop. Encoding
never raises: a value orjson refuses (an integer over 64 bits, nesting over 255) is written
as text instead, and a line over ``[log] max_line_bytes`` is cut and marked
``"truncated": true``.

Levels: ``log_level`` is the default; ``[log] levels`` sets a level per logger name
(``hostd.upstream`` covers ``hostd.upstream.*``) and per plugin (``plugin:<id>``, or
``plugin`` for all). :meth:`Logger.named` gives a named logger; :meth:`Logger.plugin_threshold`
is what ``host.log`` compares a plugin's line with. ``trace`` is for per-request lines (each
request's method and id), which ``debug`` does not show.

Under journald (``$JOURNAL_STREAM`` names stderr) every line starts with the sd-daemon
``<N>`` priority prefix, so ``journalctl -p err`` finds the errors.

This module never reads configuration files and never logs a value under a secret-looking key.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from hostd.config import Config

TRACE, DEBUG, INFO, WARN, ERROR = 5, 10, 20, 30, 40
LEVELS = {"trace": TRACE, "debug": DEBUG, "info": INFO, "warn": WARN, "warning": WARN, "error": ERROR}
LEVEL_NAMES = {TRACE: "trace", DEBUG: "debug", INFO: "info", WARN: "warn", ERROR: "error"}
# sd-daemon(3) priorities: debug 7, info 6, warning 4, err 3.
JOURNAL_PRIORITY = {"trace": b"<7>", "debug": b"<7>", "info": b"<6>", "warn": b"<4>", "error": b"<3>"}

REDACTED = "[redacted]"
TOO_DEEP = "[nested too deep]"
MAX_REDACT_DEPTH = 128
BATCH_DELAY_S = 0.005
DEFAULT_MAX_LINE_BYTES = 64 * 1024
DEFAULT_MAX_QUEUE_BYTES = 8 * 1024 * 1024
MAX_KEY_CHARS = 256  # in a truncated line, longer field names are cut too

_SECRET_WORDS = ("authorization", "cookie", "token", "secret", "password", "apikey")
# is_secret_key runs on plugin-chosen field names: only short ones are remembered, and the
# cache is emptied when full, so a plugin cannot make it hold its strings.
SECRET_CACHE_MAX_KEYS = 4096
SECRET_CACHE_MAX_KEY_CHARS = 64
_secret_cache: dict[str, bool] = {}


def is_secret_key(key: str) -> bool:
    """True for keys whose values must never be logged (case and ``-``/``_`` ignored)."""
    hit = _secret_cache.get(key)
    if hit is not None:
        return hit
    folded = key.lower().replace("-", "").replace("_", "")
    secret = any(word in folded for word in _SECRET_WORDS)
    if len(key) <= SECRET_CACHE_MAX_KEY_CHARS:
        if len(_secret_cache) >= SECRET_CACHE_MAX_KEYS:
            _secret_cache.clear()
        _secret_cache[key] = secret
    return secret


def secret_cache_size() -> tuple[int, int]:
    """(entries, characters held) of the secret-key cache: for tests and memory checks."""
    return len(_secret_cache), sum(len(k) for k in _secret_cache)


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with every value under a secret-looking key replaced."""
    if isinstance(value, dict):
        if _depth >= MAX_REDACT_DEPTH:
            return TOO_DEEP
        return {k: REDACTED if is_secret_key(str(k)) else redact(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if _depth >= MAX_REDACT_DEPTH:
            return TOO_DEEP
        return [redact(v, _depth + 1) for v in value]
    return value


def redact_headers(headers: dict[str, list[str]] | None) -> dict[str, Any]:
    return redact(dict(headers or {}))  # type: ignore[no-any-return]


# Encoding that never raises ----------------------------------------------------------------

_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_SAFE_DEPTH = 200  # below orjson's 255


def _dumps(value: Any) -> bytes:
    """orjson, falling back to a sanitised copy for values orjson refuses."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:  # orjson.JSONEncodeError: int over 64 bits, nesting, non-str keys
        return orjson.dumps(_sanitize(value, 0), default=str)


def _sanitize(value: Any, depth: int) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _UINT64_MAX else str(value)
    if isinstance(value, dict):
        if depth >= _SAFE_DEPTH:
            return TOO_DEEP
        return {str(k): _sanitize(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if depth >= _SAFE_DEPTH:
            return TOO_DEEP
        return [_sanitize(v, depth + 1) for v in value]
    return str(value)


def _cut_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return text
    return data[: max(0, max_bytes)].decode("utf-8", errors="ignore")


def _truncate_json(record: Mapping[str, Any], limit: int) -> bytes:
    """The record cut to at most ``limit`` bytes, keys in order, with ``"truncated": true``."""
    budget = limit - 24  # room for "truncated":true and the braces
    out: dict[str, Any] = {}
    used = 0
    for key, value in record.items():
        key = key if len(key) <= MAX_KEY_CHARS else key[:MAX_KEY_CHARS]
        encoded = _dumps(value)
        cost = len(key.encode()) + len(encoded) + 6
        if used + cost <= budget:
            out[key] = value
            used += cost
            continue
        room = budget - used - len(key.encode()) - 8
        if room >= 16 or key == "msg":
            text = value if isinstance(value, str) else encoded.decode("utf-8", errors="replace")
            out[key] = _cut_utf8(text, max(0, room))
            used = budget  # nothing after this one fits
    out["truncated"] = True
    line = _dumps(out)
    while len(line) > limit:  # JSON escapes can make a cut value longer than its bytes
        longest = max((k for k in out if isinstance(out[k], str)), key=lambda k: len(out[k]), default=None)
        if longest is None or not out[longest]:
            out = {k: out[k] for k in ("ts", "level", "msg") if k in out} | {"truncated": True}
            if all(not isinstance(v, str) or not v for v in out.values()):
                return _dumps({"truncated": True})[:limit]
            longest = max((k for k in out if isinstance(out[k], str)), key=lambda k: len(out[k]))
        out[longest] = out[longest][: len(out[longest]) // 2]
        line = _dumps(out)
    return line


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@+,%[]()")


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        if value and all(c in _PLAIN for c in value):
            return value
        return _dumps(value).decode()
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _dumps(value).decode("utf-8", errors="replace")


def _text_line(record: Mapping[str, Any]) -> bytes:
    """``2026-11-25T12:00:00.123Z INFO  hostd ready listen=unix:/run/hostd/plugins.sock pid=7``"""
    level = str(record.get("level", "")).upper()
    parts = [str(record.get("ts", "")), f"{level:<5}", str(record.get("msg", ""))]
    for key, value in record.items():
        if key in ("ts", "level", "msg"):
            continue
        parts.append(f"{key}={_text_value(value)}")
    return " ".join(parts).replace("\n", "\\n").encode("utf-8", errors="replace")


def journal_stream_matches(fd: int, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``$JOURNAL_STREAM`` (``device:inode``) is the file ``fd`` writes to."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def parse_level(name: str, default: int = INFO) -> int:
    return LEVELS.get(name.strip().lower(), default)


# Rate limits -------------------------------------------------------------------------------


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
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
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


# The logger ----------------------------------------------------------------------------------


class _Methods:
    """``trace`` … ``error`` for anything with ``log(level, msg, **fields)``."""

    def log(self, level: int, msg: str, **fields: Any) -> None:
        raise NotImplementedError

    def trace(self, msg: str, **fields: Any) -> None:
        self.log(TRACE, msg, **fields)

    def debug(self, msg: str, **fields: Any) -> None:
        self.log(DEBUG, msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self.log(INFO, msg, **fields)

    def warn(self, msg: str, **fields: Any) -> None:
        self.log(WARN, msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log(ERROR, msg, **fields)


class Logger(_Methods):
    """The process-wide logger. ``log`` is safe to call from the event loop at any rate."""

    def __init__(
        self,
        level: str = "info",
        fd: int | None = None,
        max_queued: int = 100_000,
        *,
        fmt: str = "auto",
        levels: Mapping[str, str] | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.threshold = parse_level(level)
        self.dropped = 0
        self._fd = sys.stderr.fileno() if fd is None else fd
        self.journal = journal_stream_matches(self._fd, environ)
        self._text = False
        self.set_format(fmt)
        self.max_line_bytes = max_line_bytes
        self.max_queue_bytes = max_queue_bytes
        self._named: dict[str, int] = {}
        self._plugin: dict[str, int] = {}
        self._plugin_all: int | None = None
        self._generation = 0
        self.set_levels(levels or {})
        self._queue: collections.deque[bytes] = collections.deque()
        self._max_queued = max_queued
        self._queued_in = 0  # bytes queued, written by the caller's thread only
        self._queued_out = 0  # bytes taken by the writer, written by the writer thread only
        self._wake = threading.Event()
        self._stopping = False
        self._second = -1
        self._second_text = ""
        self._thread = threading.Thread(target=self._drain, name="hostd-log", daemon=True)
        self._thread.start()

    # Configuration ---------------------------------------------------------------------

    def set_level(self, level: str) -> None:
        self.threshold = parse_level(level)
        self._generation += 1

    def set_format(self, fmt: str) -> None:
        """``json``, ``text``, or ``auto`` (text when the log fd is a terminal)."""
        if fmt == "auto":
            try:
                self._text = os.isatty(self._fd)
            except OSError:
                self._text = False
        else:
            self._text = fmt == "text"

    @property
    def format(self) -> str:
        return "text" if self._text else "json"

    def set_levels(self, levels: Mapping[str, str]) -> None:
        """Per-logger levels: ``{"hostd.upstream": "debug", "plugin:p1": "trace", "plugin": "warn"}``."""
        named: dict[str, int] = {}
        plugin: dict[str, int] = {}
        plugin_all = None
        for name, level in levels.items():
            value = parse_level(level)
            if name == "plugin":
                plugin_all = value
            elif name.startswith("plugin:"):
                plugin[name[7:]] = value
            else:
                named[name] = value
        self._named, self._plugin, self._plugin_all = named, plugin, plugin_all
        self._generation += 1

    def apply_config(self, config: Config) -> None:
        """Take the logging part of a (re)loaded configuration: level, format, levels, bounds."""
        self.set_level(config.log_level)
        self.set_format(config.log.format)
        self.set_levels(config.log.levels)
        self.max_line_bytes = config.log.max_line_bytes
        self.max_queue_bytes = config.log.max_queue_bytes

    def threshold_for(self, name: str) -> int:
        """The level of logger ``name``: its own, else its nearest dotted parent's, else log_level."""
        if self._named:
            while True:
                level = self._named.get(name)
                if level is not None:
                    return level
                name, dot, _ = name.rpartition(".")
                if not dot:
                    break
        return self.threshold

    def plugin_threshold(self, plugin_id: str) -> int:
        """The level a plugin's ``host.log`` lines are compared with."""
        if self._plugin:
            level = self._plugin.get(plugin_id)
            if level is not None:
                return level
        return self.threshold if self._plugin_all is None else self._plugin_all

    def named(self, name: str) -> NamedLogger:
        """A logger whose lines carry ``"logger": name`` and follow ``[log] levels`` for it."""
        return NamedLogger(self, name)

    def enabled(self, level: int) -> bool:
        return level >= self.threshold

    # Writing ---------------------------------------------------------------------------

    def _timestamp(self) -> str:
        """UTC with milliseconds, ``2026-11-25T12:00:00.123Z``; the formatted second is reused."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((now - second) * 1000):03d}Z"

    def log(self, level: int, msg: str, **fields: Any) -> None:
        if level < self.threshold:
            return
        self._record(level, msg, fields)

    def _record(self, level: int, msg: str, fields: Mapping[str, Any]) -> None:
        record: dict[str, Any] = {"ts": self._timestamp(), "level": LEVEL_NAMES.get(level, "debug"), "msg": msg}
        for key, value in fields.items():
            if value is None:
                continue
            record[key] = REDACTED if is_secret_key(key) else redact(value)
        self.emit_record(record)

    @property
    def queued_bytes(self) -> int:
        return self._queued_in - self._queued_out

    def emit_record(self, record: dict[str, Any]) -> None:
        """Queue an already-redacted record; a ``ts`` of None is filled in."""
        if record.get("ts") is None:
            record["ts"] = self._timestamp()
        queued = self._queued_in - self._queued_out
        if queued >= self.max_queue_bytes or len(self._queue) >= self._max_queued:
            self.dropped += 1
            return
        line = self.encode(record)
        if queued + len(line) > self.max_queue_bytes:
            self.dropped += 1
            return
        self._queued_in += len(line)
        self._queue.append(line)
        if not self._wake.is_set():
            self._wake.set()

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """One log line, newline included: never raises, never longer than ``max_line_bytes``."""
        prefix = JOURNAL_PRIORITY.get(record.get("level", ""), b"<7>") if self.journal else b""
        limit = self.max_line_bytes - len(prefix) - 1
        if self._text:
            body = _text_line(record)
            if len(body) > limit:
                mark = b" truncated=true"
                body = body[: max(0, limit - len(mark))].decode("utf-8", errors="ignore").encode() + mark
        else:
            try:
                body = orjson.dumps(record, default=str)
            except TypeError:  # orjson.JSONEncodeError: a value orjson cannot write
                body = _dumps(_sanitize(record, 0))
            if len(body) > limit:
                body = _truncate_json(record, limit)
        return prefix + body + b"\n"

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
                self._queued_out += len(data)
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


class NamedLogger(_Methods):
    """A named view of a :class:`Logger` (``hostd.upstream``): its own level from ``[log] levels``."""

    def __init__(self, parent: Logger, name: str) -> None:
        self.parent = parent
        self.name = name
        self._generation = -1
        self._threshold = INFO

    @property
    def threshold(self) -> int:
        if self._generation != self.parent._generation:
            self._threshold = self.parent.threshold_for(self.name)
            self._generation = self.parent._generation
        return self._threshold

    def enabled(self, level: int) -> bool:
        return level >= self.threshold

    def log(self, level: int, msg: str, **fields: Any) -> None:
        if level < self.threshold:
            return
        self.parent._record(level, msg, {"logger": self.name, **fields})


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


def configure_from(config: Config) -> Logger:
    """The process-wide logger set up from a configuration (level, format, levels, bounds)."""
    logger = get_logger()
    logger.apply_config(config)
    return logger
