"""``host.log``: a plugin's log line, written as one structured line with secrets redacted.

Each session may write ``[log] plugin_lines_per_s`` lines a second (bursts of ``plugin_burst``);
lines over it are dropped, counted in ``totals.dropped_log_lines``, and reported by one
warning a second at most. Lines below the plugin's level cost no more than the level check.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from hostd.errors import InvalidParams
from hostd.logs import LEVEL_NAMES, LEVELS, Logger
from hostd.rate_limit import SessionBucket
from hostd.redact import PLAIN_KEYS, merge_redacted, plain_keys
from hostd.rpc.messages import EMPTY  # answered preformatted (rpc/messages.encode_result)
from hostd.rpc.methods import CallContext, host_method

if TYPE_CHECKING:
    from hostd.services import Services


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
# The same, for fields whose values are all scalars (the common case), checked by msgspec as it
# decodes: such fields need no redaction below their own keys. Values decode as with Any.
_flat_decoder = msgspec.json.Decoder(dict[str, str | int | float | bool | None] | None)
_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE
# '"level":"…","msg":' for each level: the start of a line after its timestamp.
_LEVEL_MSG = {level: b',"level":"' + name.encode() + b'","msg":' for level, name in LEVEL_NAMES.items()}


_OBJECT_OR_NULL = frozenset(b"{n")
# The first byte of a Raw value, read through the buffer protocol without a memoryview (half the cost).
_first_byte = struct.Struct("B").unpack_from
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


class SessionLog(SessionBucket):
    """host.log's state of one session (``session.log_bucket``): its rate limit, its plugin's
    level (until a level changes) and the plugin and session members of its lines, encoded."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        super().__init__(rate_per_s, burst)
        self.generation = -1
        self.threshold = 0
        self.plugin_id = ""
        self.members = b""  # ',"plugin":"p1","session":"session-1"'
        self.context = b""  # the same and a comma: fields follow
        self.closing = b""  # the same, the brace and the newline: the line ends

    def refresh(self, logger: Logger, plugin_id: str, session_id: str) -> None:
        self.generation = logger.generation
        self.threshold = logger.plugin_threshold(plugin_id)
        self.plugin_id = plugin_id
        self.members = members = b',"plugin":' + _dumps(plugin_id) + b',"session":' + _dumps(session_id)
        self.context, self.closing = members + b",", members + b"}\n"


def _decode_fields(raw: bytes) -> dict[str, Any] | None:
    """``fields`` as the struct used to decode it, with the same error (``at `$.fields```)."""
    try:
        return _fields_decoder.decode(b'{"fields":' + raw + b"}").fields
    except msgspec.ValidationError as e:
        raise InvalidParams(f"decode host log request: {e}") from None


def _over_limit(services: Services, state: SessionLog, plugin_id: str) -> None:
    """A line over plugin_lines_per_s: dropped and counted, one warning a second."""
    services.counters.dropped_log_lines += 1
    if dropped := state.warning_due():
        services.logger.warn("plugin log lines dropped: over the rate limit", plugin=plugin_id, dropped=dropped)


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
    state = session.log_bucket
    if state is None:
        cfg = services.config.log
        state = session.log_bucket = SessionLog(cfg.plugin_lines_per_s, cfg.plugin_burst)
    if state.generation != logger.generation or state.plugin_id is not plugin_id:
        state.refresh(logger, plugin_id, session.id)
    if level < state.threshold:
        if raw and _first_byte(raw)[0] not in _OBJECT_OR_NULL:  # the decode error, as before
            _decode_fields(bytes(raw))
        return EMPTY
    scope = ctx.scope
    request_id = scope.request_id if scope is not None else None
    line = logger.plugin_line
    if line is not None:  # the common line in one C call: checked, rate-limited and queued
        status = line(state, _LEVEL_MSG[level], params.message, state.members, request_id, raw, logger.max_line_bytes)
        if status:
            if status == 2:
                _over_limit(services, state, plugin_id)
            elif status == 3:
                logger.dropped += 1
            return EMPTY
    fields = None
    flat = False  # every value a scalar: nothing to redact below the keys
    truncated = False
    if raw and len(raw) > logger.max_line_bytes:
        fields, truncated = _bounded_fields(raw, logger.max_line_bytes)
    elif raw:  # decoded before the rate limit: a bad ``fields`` is an error even when dropped
        try:
            fields = _flat_decoder.decode(raw)
            flat = True
        except msgspec.ValidationError:
            try:
                fields = _dict_decoder.decode(raw)
            except msgspec.ValidationError:
                _decode_fields(bytes(raw))  # raises the error the wrapped decode words
                raise
    if not state.take():
        _over_limit(services, state, plugin_id)
        return EMPTY
    msg = params.message.strip() or "plugin log"
    # The common line, encoded in pieces: fields whose keys are all plain and values all scalars
    # are what merge_redacted would copy unchanged, so their own encoding ends the line. The
    # record below is the reference: emit_encoded declines whatever would not match it.
    if not truncated and (not fields or (flat and (PLAIN_KEYS.issuperset(fields) or plain_keys(fields)))):
        try:
            if request_id:
                parts = [b"", _LEVEL_MSG[level], _dumps(msg), state.members, b',"request_id":', _dumps(request_id)]
                parts.append(b"," if fields else b"}\n")
            else:
                parts = [b"", _LEVEL_MSG[level], _dumps(msg), state.context if fields else state.closing]
            if fields:  # '{"n":1}' from its second byte, newline included: '"n":1}\n'
                parts.append(_dumps(fields, option=_NEWLINE)[1:])
        except TypeError:  # orjson.JSONEncodeError: an integer over 64 bits; the record path copes
            pass
        else:
            if logger.emit_encoded(parts):
                return EMPTY
    record: dict[str, Any] = {
        "ts": None,
        "level": LEVEL_NAMES[level],
        "msg": msg,
        "plugin": plugin_id,
        "session": session.id,
    }
    if request_id:
        record["request_id"] = request_id
    if fields:
        merge_redacted(record, fields)
    if truncated:
        record["truncated"] = True
    logger.emit_record(record)
    return EMPTY


METHODS = (host_log,)
