"""Log line formatting: a record (a dict) to one line of bytes, JSON or text, and the
journald priority prefix.

Encoding never raises: a value orjson refuses (an integer over 64 bits, nesting over 255,
a key that is not a string) is written as text instead, and a line over its byte limit is
cut, field by field, and marked ``"truncated": true``. This module never writes anything,
never redacts (records arrive redacted) and holds no state between lines but the formatted
timestamp of the current millisecond (:class:`Timestamps`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from hostd.redact import TOO_DEEP

# sd-daemon(3) priorities: debug 7, info 6, warning 4, err 3.
JOURNAL_PRIORITY = {"trace": b"<7>", "debug": b"<7>", "info": b"<6>", "warn": b"<4>", "error": b"<3>"}
MAX_KEY_CHARS = 256  # in a truncated line, longer field names are cut too

_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_SAFE_DEPTH = 200  # below orjson's 255


class Timestamps:
    """UTC with milliseconds, ``2026-11-25T12:00:00.123Z``, of a ``time.time()``: formatted once
    per millisecond (a busy daemon writes many lines in one), the date and time once a second.

    ``text`` is the millisecond ``[lo, hi)``'s, ``head`` the start of a JSON line in it,
    ``{"ts":"…"``: a caller that finds ``lo <= now < hi`` uses them as they are, without a call."""

    def __init__(self) -> None:
        self.lo = self.hi = 0.0
        self.text = ""
        self.head = b""
        self._second = -1
        self._second_text = ""

    def at(self, now: float) -> str:
        if self.lo <= now < self.hi:
            return self.text
        milli = int(now * 1000)
        second, rest = divmod(milli, 1000)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        self.lo, self.hi = milli / 1000, (milli + 1) / 1000
        self.text = text = f"{self._second_text}.{rest:03d}Z"
        self.head = b'{"ts":"' + text.encode() + b'"'
        return text


def dumps(value: Any) -> bytes:
    """orjson, falling back to a sanitised copy for values orjson refuses."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:  # orjson.JSONEncodeError: int over 64 bits, nesting, non-str keys
        return orjson.dumps(sanitize(value, 0), default=str)


def sanitize(value: Any, depth: int) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _UINT64_MAX else str(value)
    if isinstance(value, dict):
        if depth >= _SAFE_DEPTH:
            return TOO_DEEP
        return {str(k): sanitize(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if depth >= _SAFE_DEPTH:
            return TOO_DEEP
        return [sanitize(v, depth + 1) for v in value]
    return str(value)


def cut_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return text
    return data[: max(0, max_bytes)].decode("utf-8", errors="ignore")


def truncate_json(record: Mapping[str, Any], limit: int) -> bytes:
    """The record cut to at most ``limit`` bytes, keys in order, with ``"truncated": true``."""
    budget = limit - 24  # room for "truncated":true and the braces
    out: dict[str, Any] = {}
    used = 0
    for key, value in record.items():
        key = key if len(key) <= MAX_KEY_CHARS else key[:MAX_KEY_CHARS]
        encoded = dumps(value)
        cost = len(key.encode()) + len(encoded) + 6
        if used + cost <= budget:
            out[key] = value
            used += cost
            continue
        room = budget - used - len(key.encode()) - 8
        if room >= 16 or key == "msg":
            text = value if isinstance(value, str) else encoded.decode("utf-8", errors="replace")
            out[key] = cut_utf8(text, max(0, room))
            used = budget  # nothing after this one fits
    out["truncated"] = True
    line = dumps(out)
    while len(line) > limit:  # JSON escapes can make a cut value longer than its bytes
        longest = max((k for k in out if isinstance(out[k], str)), key=lambda k: len(out[k]), default=None)
        if longest is None or not out[longest]:
            out = {k: out[k] for k in ("ts", "level", "msg") if k in out} | {"truncated": True}
            if all(not isinstance(v, str) or not v for v in out.values()):
                return dumps({"truncated": True})[:limit]
            longest = max((k for k in out if isinstance(out[k], str)), key=lambda k: len(out[k]))
        out[longest] = out[longest][: len(out[longest]) // 2]
        line = dumps(out)
    return line


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@+,%[]()")


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        if value and all(c in _PLAIN for c in value):
            return value
        return dumps(value).decode()
    if value is True:
        return "true"
    if value is False:
        return "false"
    return dumps(value).decode("utf-8", errors="replace")


def text_line(record: Mapping[str, Any]) -> bytes:
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
