"""``host.log``: a plugin's log line, written as one structured line with secrets redacted.

Each session may write ``[log] plugin_lines_per_s`` lines a second (bursts of ``plugin_burst``);
lines over it are dropped, counted in ``totals.dropped_log_lines``, and reported by one
warning a second at most. Lines below the plugin's level cost no more than the level check.
"""

from __future__ import annotations

from typing import Any

import msgspec

from hostd.errors import InvalidParams
from hostd.logs import LEVEL_NAMES, LEVELS, TokenBucket
from hostd.redact import merge_redacted
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
# Once the first byte says object or null, ``fields`` decodes straight to a dict: no copy of
# the bytes and no wrapper (the wrapped decode above is kept for its error message).
_dict_decoder = msgspec.json.Decoder(dict[str, Any] | None)


_OBJECT_OR_NULL = frozenset(b"{n")
# Fields bigger than a log line can hold are looked at as raw values: only as many bytes as
# the line can carry are ever turned into Python objects (16 MiB of fields, or values nested
# 200 deep, would otherwise hold the event loop for seconds before being cut to 64 KiB).
_raw_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw] | None)
_value_decoder = msgspec.json.Decoder()


def _bounded_fields(raw: msgspec.Raw, budget: int) -> tuple[dict[str, Any] | None, bool]:
    """``fields`` with values decoded while they fit in ``budget`` bytes; the rest counted.

    Past ``4 * budget`` not even the keys are looked at (100,000 small fields would cost as
    much as decoding them): the line says how many bytes of fields it left out."""
    if len(raw) > 4 * budget:  # the envelope's decode has checked it is JSON already
        if memoryview(raw)[0] != ord("{"):
            _decode_fields(bytes(raw))  # the error of a ``fields`` that is not an object
        return {"fields_not_logged": f"{len(raw)} bytes"}, True
    try:
        raw_fields = _raw_fields_decoder.decode(raw)
    except msgspec.ValidationError:
        _decode_fields(bytes(raw))  # raises the error the wrapped decode words
        raise
    if raw_fields is None:
        return None, False
    fields: dict[str, Any] = {}
    left_out = 0
    for key, value in raw_fields.items():
        size = len(value) + len(key)
        if size <= budget:
            budget -= size
            fields[key] = _value_decoder.decode(value)
        else:
            left_out += 1
    if left_out:
        fields["fields_not_logged"] = left_out  # a count, not the keys: they could be megabytes
    return fields, bool(left_out)


def _decode_fields(raw: bytes) -> dict[str, Any] | None:
    """``fields`` as the struct used to decode it, with the same error (``at `$.fields```)."""
    try:
        return _fields_decoder.decode(b'{"fields":' + raw + b"}").fields
    except msgspec.ValidationError as e:
        raise InvalidParams(f"decode host log request: {e}") from None


@host_method("host.log", LogParams, "host log", inline=True)
def host_log(ctx: CallContext, params: LogParams) -> dict[str, Any]:
    services = ctx.services
    logger = services.logger
    session = ctx.session
    plugin_id = session.plugin_id
    raw = params.fields
    level = LEVELS.get(params.level)  # the usual spelling first: no strip/lower per call
    if level is None:
        level = LEVELS.get(params.level.strip().lower(), 10)
    if level < logger.plugin_threshold(plugin_id):
        if raw and memoryview(raw)[0] not in _OBJECT_OR_NULL:  # the decode error, as before
            _decode_fields(bytes(raw))
        return _EMPTY
    fields = None
    truncated = False
    if raw and len(raw) > logger.max_line_bytes:
        fields, truncated = _bounded_fields(raw, logger.max_line_bytes)
    elif raw:  # decoded before the rate limit: a bad ``fields`` is an error even when dropped
        try:
            fields = _dict_decoder.decode(raw)
        except msgspec.ValidationError:
            _decode_fields(bytes(raw))  # raises the error the wrapped decode words
            raise
    bucket = session.log_bucket
    if bucket is None:
        cfg = services.config.log
        bucket = session.log_bucket = TokenBucket(cfg.plugin_lines_per_s, cfg.plugin_burst)
    if not bucket.take():  # over plugin_lines_per_s: dropped and counted, one warning a second
        services.counters.dropped_log_lines += 1
        if dropped := bucket.warning_due():
            logger.warn("plugin log lines dropped: over the rate limit", plugin=plugin_id, dropped=dropped)
        return _EMPTY
    record: dict[str, Any] = {
        "ts": None,
        "level": LEVEL_NAMES[level],
        "msg": params.message.strip() or "plugin log",
        "plugin": plugin_id,
        "session": session.id,
    }
    if request_id := ctx.request_id:
        record["request_id"] = request_id
    if fields:
        merge_redacted(record, fields)
    if truncated:
        record["truncated"] = True
    logger.emit_record(record)
    return _EMPTY


METHODS = (host_log,)
