"""``host.log``: a plugin's log line, written as one structured line with secrets redacted.

Each session may write ``[log] plugin_lines_per_s`` lines a second (bursts of ``plugin_burst``);
lines over it are dropped, counted in ``totals.dropped_log_lines``, and reported by one
warning a second at most. Lines below the plugin's level cost no more than the level check.
"""

from __future__ import annotations

from typing import Any

import msgspec

from hostd.errors import InvalidParams
from hostd.logs import LEVEL_NAMES, LEVELS, REDACTED, TokenBucket, is_secret_key, redact
from hostd.rpc.methods import CallContext, host_method

_EMPTY: dict[str, Any] = {}  # never mutated: encoded as the result {}


class LogParams(msgspec.Struct, frozen=True, kw_only=True):
    level: str = ""
    message: str = ""
    # Raw JSON: a call below the log level (the common case) never builds the dict.
    fields: msgspec.Raw = msgspec.Raw(b"")
    host_callback_id: str = ""


class _Fields(msgspec.Struct):
    fields: dict[str, Any] | None = None


_fields_decoder = msgspec.json.Decoder(_Fields)


_OBJECT_OR_NULL = frozenset(b"{n")


def _decode_fields(raw: bytes) -> dict[str, Any] | None:
    """``fields`` as the struct used to decode it, with the same error (``at `$.fields```)."""
    try:
        return _fields_decoder.decode(b'{"fields":' + raw + b"}").fields
    except msgspec.ValidationError as e:
        raise InvalidParams(f"decode host log request: {e}") from None


@host_method("host.log", LogParams, "host log", inline=True)
def host_log(ctx: CallContext, params: LogParams) -> dict[str, Any]:
    logger = ctx.services.logger
    raw = params.fields
    if raw and memoryview(raw)[0] not in _OBJECT_OR_NULL:  # the decode error, as before
        _decode_fields(bytes(raw))
    level = LEVELS.get(params.level)  # the usual spelling first: no strip/lower per call
    if level is None:
        level = LEVELS.get(params.level.strip().lower(), 10)
    if level < logger.plugin_threshold(ctx.plugin_id):
        return _EMPTY
    session = ctx.session
    bucket = session.log_bucket
    if bucket is None:
        cfg = ctx.services.config.log
        bucket = session.log_bucket = TokenBucket(cfg.plugin_lines_per_s, cfg.plugin_burst)
    if not bucket.take():  # over plugin_lines_per_s: dropped and counted, one warning a second
        ctx.services.counters.dropped_log_lines += 1
        if dropped := bucket.warning_due():
            logger.warn("plugin log lines dropped: over the rate limit", plugin=ctx.plugin_id, dropped=dropped)
        return _EMPTY
    record: dict[str, Any] = {
        "ts": None,
        "level": LEVEL_NAMES[level],
        "msg": params.message.strip() or "plugin log",
        "plugin": ctx.plugin_id,
        "session": ctx.session.id,
    }
    if ctx.request_id:
        record["request_id"] = ctx.request_id
    for key, value in ((_decode_fields(bytes(raw)) if raw else None) or {}).items():
        key = key.strip()
        if key and key not in record:
            record[key] = REDACTED if is_secret_key(key) else redact(value)
    logger.emit_record(record)
    return _EMPTY


METHODS = (host_log,)
