"""Structured logging on stderr: JSON or text lines, secrets redacted, bounded, never blocking.

Lines are filtered by level before anything is formatted, encoded on the caller's thread and
handed to a writer thread through a queue bounded in lines and bytes; when stderr is slower
than the daemon, lines are dropped and counted rather than stalling the event loop. The queue
and its thread are :mod:`hostd.log_writer`'s: C (``hostd._logline``, a thread that never takes
the GIL) where the package was built with a compiler, else Python; both write the same lines.
Encoding never raises: a value orjson refuses (an integer over 64 bits, nesting over 255) is
written as text instead, and a line over ``[log] max_line_bytes`` is cut and marked
``"truncated": true``.

Levels: ``log_level`` is the default; ``[log] levels`` sets a level per logger name
(``hostd.upstream`` covers ``hostd.upstream.*``) and per plugin (``plugin:<id>``, or
``plugin`` for all). :meth:`Logger.named` gives a named logger; :meth:`Logger.plugin_threshold`
is what ``host.log`` compares a plugin's line with. ``trace`` is for per-request lines (each
request's method and id), which ``debug`` does not show.

Under journald (``$JOURNAL_STREAM`` names stderr) every line starts with the sd-daemon
``<N>`` priority prefix, so ``journalctl -p err`` finds the errors.

This module is the Logger; the rest lives beside it and is re-exported here, where the daemon
imports it from: the queue and its thread in :mod:`hostd.log_writer`, the levels in
:mod:`hostd.log_levels`, line formatting in :mod:`hostd.log_format`, redaction and the
secret-key check in :mod:`hostd.redact`, the per-session rate limit in :mod:`hostd.rate_limit`.
This module never reads configuration files, never blocks the caller on the log fd, and never
logs a value under a secret-looking key.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from hostd.log_format import (
    JOURNAL_PRIORITY,
    MAX_KEY_CHARS,
    Timestamps,
    dumps,
    journal_stream_matches,
    sanitize,
    text_line,
    truncate_json,
)
from hostd.log_levels import DEBUG, ERROR, INFO, LEVEL_NAMES, LEVELS, TRACE, WARN, LevelMethods, parse_level
from hostd.log_writer import new_writer
from hostd.rate_limit import TokenBucket
from hostd.redact import (
    MAX_REDACT_DEPTH,
    REDACTED,
    SECRET_CACHE_MAX_KEY_CHARS,
    SECRET_CACHE_MAX_KEYS,
    TOO_DEEP,
    is_secret_key,
    redact,
    redact_headers,
    secret_cache_size,
)

if TYPE_CHECKING:
    from hostd.config import Config

_NEWLINE = orjson.OPT_APPEND_NEWLINE
_dumps = orjson.dumps
_time = time.time
DEFAULT_MAX_LINE_BYTES = 64 * 1024
DEFAULT_MAX_QUEUE_BYTES = 8 * 1024 * 1024


# The logger ----------------------------------------------------------------------------------


class Logger(LevelMethods):
    """The process-wide logger. ``log`` is safe to call from the event loop at any rate.
    ``c_writer=False`` takes the Python writer even where the C one was built (for tests)."""

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
        c_writer: bool = True,
    ) -> None:
        self.threshold = parse_level(level)
        self.dropped = 0
        self._fd = sys.stderr.fileno() if fd is None else fd
        self.journal = journal_stream_matches(self._fd, environ)
        self._text = False
        self._plain_json = False  # JSON without a journald prefix: emit_record's fast path
        # The queue and its thread (hostd.log_writer): C where built, unless c_writer=False.
        self._writer = new_writer(self._fd, max_queue_bytes, max_queued, c_writer=c_writer)
        # host.log's written line in one C call (hostd._logline.Writer.plugin_line), or None: with
        # the Python writer, or a format that is not plain JSON, host.log builds the line itself.
        self.plugin_line: Callable[..., int] | None = None
        self.set_format(fmt)
        self.max_line_bytes = max_line_bytes
        self._named: dict[str, int] = {}
        self._plugin: dict[str, int] = {}
        self._plugin_all: int | None = None
        self.generation = 0  # changes with every level: a cached plugin_threshold() is stale then
        self.set_levels(levels or {})
        self._ts = Timestamps()

    # Configuration ---------------------------------------------------------------------

    def set_level(self, level: str) -> None:
        self.threshold = parse_level(level)
        self.generation += 1

    def set_format(self, fmt: str) -> None:
        """``json``, ``text``, or ``auto`` (text when the log fd is a terminal)."""
        if fmt == "auto":
            try:
                self._text = os.isatty(self._fd)
            except OSError:
                self._text = False
        else:
            self._text = fmt == "text"
        self._plain_json = not self._text and not self.journal
        self.plugin_line = getattr(self._writer, "plugin_line", None) if self._plain_json else None

    @property
    def max_queue_bytes(self) -> int:
        return self._writer.max_queue_bytes

    @max_queue_bytes.setter
    def max_queue_bytes(self, value: int) -> None:
        self._writer.max_queue_bytes = value

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
        self.generation += 1

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

    def log(self, level: int, msg: str, **fields: Any) -> None:
        if level < self.threshold:
            return
        self._record(level, msg, fields)

    def _record(self, level: int, msg: str, fields: Mapping[str, Any]) -> None:
        record: dict[str, Any] = {"ts": self._ts.at(_time()), "level": LEVEL_NAMES.get(level, "debug"), "msg": msg}
        for key, value in fields.items():
            if value is None:
                continue
            record[key] = REDACTED if is_secret_key(key) else redact(value)
        self.emit_record(record)

    @property
    def queued_bytes(self) -> int:
        return self._writer.queued_bytes

    def emit_record(self, record: dict[str, Any]) -> None:
        """Queue an already-redacted record; a ``ts`` of None is filled in."""
        if record.get("ts") is None:
            record["ts"] = self._ts.at(_time())
        if self._plain_json:  # the common case, inline: one orjson call, newline included
            try:
                line = _dumps(record, default=str, option=_NEWLINE)
            except TypeError:  # orjson.JSONEncodeError: encode() writes such values as text
                line = self.encode(record)
            else:
                if len(line) > self.max_line_bytes:
                    line = self.encode(record)
        else:
            line = self.encode(record)
        if not self._writer.write(line):
            self.dropped += 1

    def emit_encoded(self, parts: list[bytes]) -> bool:
        """Queue a JSON line given encoded: ``parts[1:]`` is what follows ``"ts":…`` (from
        ``,"level":`` to the closing brace and newline) and ``parts[0]`` is overwritten with
        ``{"ts":"…"``, so the line is byte for byte what :meth:`emit_record` writes for the
        record. False, with nothing queued or counted, when that would not be so (text or
        journald format, a line over ``max_line_bytes``): the caller emits the record."""
        if not self._plain_json:
            return False
        now, ts = _time(), self._ts
        if not ts.lo <= now < ts.hi:
            ts.at(now)
        parts[0] = ts.head
        line = b"".join(parts)
        if len(line) > self.max_line_bytes:
            return False
        if not self._writer.write(line):
            self.dropped += 1
        return True

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """One log line, newline included: never raises, never longer than ``max_line_bytes``."""
        prefix = JOURNAL_PRIORITY.get(record.get("level", ""), b"<7>") if self.journal else b""
        limit = self.max_line_bytes - len(prefix) - 1
        if self._text:
            body = text_line(record)
            if len(body) > limit:
                mark = b" truncated=true"
                body = body[: max(0, limit - len(mark))].decode("utf-8", errors="ignore").encode() + mark
        else:
            try:
                body = orjson.dumps(record, default=str)
            except TypeError:  # orjson.JSONEncodeError: a value orjson cannot write
                body = dumps(sanitize(record, 0))
            if len(body) > limit:
                body = truncate_json(record, limit)
        return prefix + body + b"\n"

    def flush(self, timeout: float = 2.0) -> None:
        """Write out what is queued (used at exit); gives up after ``timeout``."""
        self._writer.flush(timeout)


class NamedLogger(LevelMethods):
    """A named view of a :class:`Logger` (``hostd.upstream``): its own level from ``[log] levels``."""

    def __init__(self, parent: Logger, name: str) -> None:
        self.parent = parent
        self.name = name
        self._generation = -1
        self._threshold = INFO

    @property
    def threshold(self) -> int:
        if self._generation != self.parent.generation:
            self._threshold = self.parent.threshold_for(self.name)
            self._generation = self.parent.generation
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


__all__ = [
    "DEBUG",
    "ERROR",
    "INFO",
    "JOURNAL_PRIORITY",
    "LEVELS",
    "LEVEL_NAMES",
    "MAX_KEY_CHARS",
    "MAX_REDACT_DEPTH",
    "REDACTED",
    "SECRET_CACHE_MAX_KEYS",
    "SECRET_CACHE_MAX_KEY_CHARS",
    "TOO_DEEP",
    "TRACE",
    "WARN",
    "LevelMethods",
    "Logger",
    "NamedLogger",
    "TokenBucket",
    "configure",
    "configure_from",
    "get_logger",
    "is_secret_key",
    "journal_stream_matches",
    "parse_level",
    "redact",
    "redact_headers",
    "secret_cache_size",
]
