"""JSON-RPC envelopes, decoded once at the edge with msgspec and encoded with orjson.

``params`` stays a ``msgspec.Raw`` so each method decodes it into its own struct (and
an absent member is told apart from ``null``). Answers are built as bytes here and
nowhere else.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import msgspec

from hostd.errors import InvalidRequest, ParseError, WireError
from hostd.rpc.params import ParamsDecoder as ParamsDecoder

RequestId = int | float | str

UNSET = msgspec.UNSET
UnsetType = msgspec.UnsetType


class Envelope(msgspec.Struct, kw_only=True):
    """Any incoming JSON-RPC message: a request, a notification, or an answer to hostd."""

    jsonrpc: str | UnsetType = UNSET
    id: int | float | str | UnsetType | None = UNSET
    method: str | UnsetType = UNSET
    params: msgspec.Raw = msgspec.Raw(b"")
    result: msgspec.Raw = msgspec.Raw(b"")
    error: msgspec.Raw = msgspec.Raw(b"")


envelope_decoder = msgspec.json.Decoder(Envelope)


# Decoding one line is total: whatever it holds, the result is an envelope or what answers it.
class PeerAnswer:
    """A message with ``result`` or ``error`` and no ``method`` that the envelope cannot hold
    (an id of the wrong type): an answer all the same, so it is never answered (§2)."""


PEER_ANSWER = PeerAnswer()
ID_LIMIT = 2**63  # ids beyond 64 bits cannot be echoed exactly (the encoder writes them as floats)


def decode_envelope(line: bytes) -> Envelope | WireError | PeerAnswer:
    """One line's envelope, or the error that answers it (never raises)."""
    try:
        env = envelope_decoder.decode(line)
    except msgspec.ValidationError as e:
        return _invalid(line, e)
    except msgspec.DecodeError as e:
        return ParseError(f"parse error: {e}")
    except RecursionError:
        return ParseError("parse error: nesting too deep")
    except Exception as e:  # decoders must be total: anything else is unreadable input too
        return ParseError(f"parse error: {type(e).__name__}")
    return env


def _invalid(line: bytes, e: msgspec.ValidationError) -> WireError | PeerAnswer:
    """The typed decode refused a member: tell bad syntax (and depth) and answers apart."""
    # Raw values are only skipped over (syntax and depth checked), never built: bounded work.
    try:
        obj = _loose_object.decode(line)
    except msgspec.ValidationError:  # valid JSON so far but not an object: check the syntax alone
        try:
            _skip.decode(line)
        except msgspec.DecodeError as syntax:
            return ParseError(f"parse error: {syntax}")
        except RecursionError:
            return ParseError("parse error: nesting too deep")
        return InvalidRequest(f"invalid request: {e}")
    except msgspec.DecodeError as syntax:
        return ParseError(f"parse error: {syntax}")
    except RecursionError:
        return ParseError("parse error: nesting too deep")
    if "method" not in obj and ("result" in obj or "error" in obj):
        return PEER_ANSWER
    return InvalidRequest(f"invalid request: {e}")


_loose_object = msgspec.json.Decoder(dict[str, msgspec.Raw])
_skip = msgspec.json.Decoder(msgspec.Raw)

raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])


# Long lines ----------------------------------------------------------------------------
# A line is normally scanned twice: the envelope skips over ``params``, then the method's
# decoder reads them. For a long line (a 16 MiB value nested 200 deep costs ~80 ms a scan)
# the method named near its start picks a typed envelope that reads params in the same
# pass. Only an exact, valid request is taken this way; anything else (no method in the
# first bytes, a different method after all, Go-cased keys, a wrong type) goes the usual
# two-pass way, so its answer is the same either way.

LONG_LINE = 64 * 1024


@functools.cache  # compiled on the first long line: most sessions never send one
def _method_near_start() -> re.Pattern[bytes]:
    return re.compile(rb'"method"\s*:\s*"([A-Za-z0-9_.]{1,100})"')


_typed: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode_long(line: bytes, decoders: Callable[[str], ParamsDecoder | None]) -> Envelope | None:
    """A long request decoded in one pass, its params already typed (``env.params`` is the
    method's struct or ``UNSET``), or ``None``: decode it the usual way (whose errors, with
    positions inside params, this pass could not word the same)."""
    found = _method_near_start().search(line, 0, 4096)
    if found is None:
        return None
    name = found[1].decode("ascii")
    decoder = decoders(name)
    if decoder is None:
        return None
    twin = decoder.twin
    typed = _typed.get(twin)
    if typed is None:
        typed = _typed[twin] = msgspec.json.Decoder(
            msgspec.defstruct("TypedEnvelope", [("params", twin | UnsetType, UNSET)], bases=(Envelope,), kw_only=True)
        )
    try:
        env: Envelope = typed.decode(line)
    except Exception:  # RecursionError too
        return None
    return env if env.method == name else None


class _Cancel(msgspec.Struct):
    id: int | float | str


_cancel_decoder = msgspec.json.Decoder(_Cancel)


def cancel_target(params: msgspec.Raw) -> RequestId | None:
    """The id a ``$/cancelRequest`` names, or None when its params name none."""
    try:
        return _cancel_decoder.decode(bytes(params) or b"{}").id
    except (msgspec.DecodeError, RecursionError):
        return None


class _Empty(msgspec.Struct):
    pass


# Answers -------------------------------------------------------------------------------
# Encoded with msgspec from small structs: measured faster than orjson on a dict per answer.
# Handlers return byte fields as ``bytes``: msgspec writes them as standard padded base64
# straight into the answer (half the cost of base64-encoding to a str first).


class _Result(msgspec.Struct, array_like=False):
    jsonrpc: str
    id: Any
    result: Any


class _Error(msgspec.Struct):
    jsonrpc: str
    id: Any
    error: Any


class _Request(msgspec.Struct):
    jsonrpc: str
    id: Any
    method: str
    params: Any


class _Notification(msgspec.Struct):
    jsonrpc: str
    method: str
    params: Any


_encode = msgspec.json.Encoder().encode


def _first_b64encode(data: bytes) -> bytes:
    """The first byte field: import pybase64 now (a start that never relays bytes never
    loads it), then let every later call go straight to it, or to msgspec without it."""
    global _fast_b64encode
    try:  # SIMD base64: a 32 KiB piece in ~2 us instead of msgspec's ~35 us (pip install 'hostd[fast]')
        from pybase64 import b64encode  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # msgspec encodes bytes itself from the next call on
        _fast_b64encode = None
        import binascii

        return binascii.b2a_base64(data, newline=False)  # this once: the same padded base64
    _fast_b64encode = b64encode
    encoded: bytes = b64encode(data)
    return encoded


_fast_b64encode: Callable[[bytes], bytes] | None = _first_b64encode


def b64(data: bytes) -> bytes | msgspec.Raw:
    """A byte field of a result: ``data`` itself (msgspec writes it as base64), or, with
    pybase64 installed, the JSON string already made (base64 never needs escaping)."""
    if _fast_b64encode is None:
        return data
    return msgspec.Raw(b'"' + _fast_b64encode(data) + b'"')


# The result {} that many host methods answer (host.log on every call): this very dict (never
# mutated), answered to an integer id, is preformatted: the same bytes without a struct or an
# encoder call (Dispatcher.inline has this test inlined: a frame is 3% of a host.log call).
EMPTY: dict[str, Any] = {}
EMPTY_ANSWER = b'{"jsonrpc":"2.0","id":%d,"result":{}}'


def encode_result(id_: RequestId | None, result: Any) -> bytes:
    if result is EMPTY and type(id_) is int:
        return EMPTY_ANSWER % id_
    return _encode(_Result("2.0", id_, result))


def encode_error(id_: RequestId | None, err: WireError) -> bytes:
    return _encode(_Error("2.0", id_, err.to_error()))


def encode_request(id_: RequestId | None, method: str, params: Any) -> bytes:
    if id_ is None:
        return _encode(_Notification("2.0", method, params))
    return _encode(_Request("2.0", id_, method, params))


def fragment(raw: bytes) -> msgspec.Raw:
    """Embed already-encoded JSON; raw newlines would break framing, so they become spaces.

    A newline can only appear between tokens of valid JSON (inside strings it is escaped),
    so replacing it does not change the value.
    """
    if b"\n" in raw or b"\r" in raw:
        raw = raw.replace(b"\r", b" ").replace(b"\n", b" ")
    return msgspec.Raw(raw)
