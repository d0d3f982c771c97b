"""Redaction: which field names are secret, and copies of values with those fields replaced.

Used by the logger, by ``host.log`` and by the HTTP client's request log. Field names come
from plugins, so the secret-key cache is bounded in entries and in key length: a plugin
cannot make it hold its strings. This module never logs, never keeps a value, and never
lets a value under a secret-looking key through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"
TOO_DEEP = "[nested too deep]"
MAX_REDACT_DEPTH = 128

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


def plain_keys_size() -> tuple[int, int]:
    """(entries, characters held) of PLAIN_KEYS: for tests and memory checks."""
    return len(PLAIN_KEYS), sum(len(k) for k in PLAIN_KEYS)


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


# Field names merge_redacted copies as they are into a host.log record: already stripped, not
# blank, not secret-looking and not a name the record has itself. Bounded like the cache above.
RECORD_KEYS = frozenset(("ts", "level", "msg", "plugin", "session", "request_id", "truncated"))
PLAIN_KEYS: set[str] = set()


def plain_keys(fields: Mapping[str, Any]) -> bool:
    """True when every key of ``fields`` is a plain field name (remembered in PLAIN_KEYS)."""
    if PLAIN_KEYS.issuperset(fields):
        return True
    for key in fields:
        if key in PLAIN_KEYS:
            continue
        if not key or key.strip() != key or key in RECORD_KEYS or is_secret_key(key):
            return False
        if len(key) <= SECRET_CACHE_MAX_KEY_CHARS:
            if len(PLAIN_KEYS) >= SECRET_CACHE_MAX_KEYS:
                PLAIN_KEYS.clear()
            PLAIN_KEYS.add(key)
    return True


def merge_redacted(record: dict[str, Any], fields: Mapping[str, Any]) -> None:
    """Add ``fields`` to ``record`` with secrets redacted, by ``host.log``'s rules: each key
    stripped of surrounding whitespace; blank keys, and keys ``record`` already has, left out."""
    known = _secret_cache.get  # the cache looked up inline: this runs for every field written
    for key, value in fields.items():
        key = key.strip()
        if not key or key in record:
            continue
        secret = known(key)
        if secret is None:
            secret = is_secret_key(key)
        if secret:
            record[key] = REDACTED
        elif isinstance(value, (dict, list)):
            record[key] = redact(value)
        else:
            record[key] = value


def redact_headers(headers: dict[str, list[str]] | None) -> dict[str, Any]:
    return redact(dict(headers or {}))  # type: ignore[no-any-return]
