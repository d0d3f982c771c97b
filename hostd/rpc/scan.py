"""Long request lines, read off the event loop: one GIL-free pass before msgspec sees them.

msgspec holds the GIL for as long as it reads a line, and a 16 MiB value nested 200 deep
takes it ~100 ms even when only skipped (a ``Raw`` field); 16 MiB of unknown keys in params
takes the slow path's fold over a second. For a line over ``LONG_LINE`` that opens with
``{`` or ``[``, the session hands the line to a worker thread instead (``hostd.rpc.long_lines``),
where ``hostd._scan`` (C, built
with the package; without it long lines are read on the loop as before) validates it whole
and reports where the members that matter are. Back on the loop, msgspec reads a small line
built from those spans:

- top-level members other than the envelope's six are left out (the envelope ignores them);
- a big ``params``/``result``/``error`` value (``Raw`` in the envelope) becomes a token, and
  a big array or object where the envelope wants a scalar becomes ``[]``/``{}`` (the same
  error either way);
- params are, per field, the one member the Go-style decode would take (the scanner picks
  it: exact spelling, else the folded spelling met last), folded as ``ParamsDecoder.recover``
  folds them (other keys are ignored by that decode anyway); a big value of a ``Raw`` field
  becomes a token too;
- each token is then put back as a ``Raw`` view of the line (no copy), so the handler sees
  exactly what the whole line holds.

Every answer is the one the usual path gives: the scanner accepts only what msgspec accepts
(it refuses more, and such a line goes the usual way), and what is left out is what msgspec
would only have skipped. Nesting deeper than 512 is checked against msgspec's own limit with
a probe of that depth. An invalid line is answered by msgspec reading it with the big values
that ended before the error cut out (the offset its message names is moved on by the cut).
The usual way is kept for more than ``MAX_MEMBERS`` envelope members named alike. A batch (a line
that is an array) is scanned the same way: its element count is known before anything is
decoded, and each element object is read as an object line is.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import msgspec

from hostd.errors import InvalidRequest, ParseError, WireError
from hostd.faults import FAULTS_ON, inject
from hostd.gocompat import fold_name
from hostd.rpc.batches import serve_batch
from hostd.rpc.messages import Envelope, ParamsDecoder, PeerAnswer, decode_envelope
from hostd.rpc.params import fold_object

if TYPE_CHECKING:
    from hostd.rpc.dispatch import Dispatcher, Reply
    from hostd.rpc.methods import Method

_scan: Callable[..., Any] | None
try:
    from hostd._scan import scan as _scan
except ImportError:  # built without a C compiler: long lines are read on the loop
    _scan = None

MAX_MEMBERS = 65536  # top-level envelope members, and params members spelled like a field
BIG = 4096  # a value at least this long is replaced (token or placeholder) when it can be
SAFE_DEPTH = 512  # deeper lines are checked against msgspec's own limit (about 1,000)
_TOP = (b"jsonrpc", b"id", b"method", b"params", b"result", b"error")
_PARAMS, _RAW = 3, frozenset((3, 4, 5))  # indexes in _TOP: params; the Raw members of Envelope
_OPEN = frozenset(b"[{")
_key = msgspec.json.Decoder(str).decode
_skip = msgspec.json.Decoder(msgspec.Raw).decode
_encode = msgspec.json.encode
_NONCE = os.urandom(8).hex().encode()  # a plugin cannot write a token by chance


def available() -> bool:
    return _scan is not None


class _Names:
    """What the scan needs of one method table: every params field name, as spelled (the scanner
    folds them, and tells an exact key from a folded one as ``ParamsDecoder.recover`` does)."""

    __slots__ = ("fields",)

    def __init__(self, methods: Mapping[str, Method[Any]]) -> None:
        names: set[str] = set()
        for method in methods.values():
            names.update(f.encode_name for f in msgspec.structs.fields(method.decoder.struct))
        # One spelling per folded name: "exact" would otherwise depend on the method.
        if len({fold_name(n) for n in names}) != len(names):
            raise RuntimeError(f"two params fields of one method table fold alike: {sorted(names)}")
        self.fields = tuple(n.encode() for n in sorted(names))


_names: dict[int, _Names] = {}  # by id() of a method table: the tables live as long as hostd


def names_of(methods: Mapping[str, Method[Any]]) -> _Names:
    names = _names.get(id(methods))
    if names is None:
        names = _names[id(methods)] = _Names(methods)
    return names


class _Fields:
    """One params struct's fields as the scan sees them: folded name → (encode name, is Raw)."""

    __slots__ = ("by_fold",)

    def __init__(self, struct: type[Any]) -> None:
        self.by_fold = {
            fold_name(f.encode_name): (f.name, f.type is msgspec.Raw) for f in msgspec.structs.fields(struct)
        }


_fields: dict[type[Any], _Fields] = {}


def _fields_of(decoder: ParamsDecoder) -> _Fields:
    fields = _fields.get(decoder.struct)
    if fields is None:
        fields = _fields[decoder.struct] = _Fields(decoder.struct)
    return fields


Records = tuple[tuple[int, ...], ...]
# (kind, max_depth, top, params, elems, n_elems): see hostd/_scan.c
Scan = tuple[int, int, Records | None, Records | None, Records | None, int]
OBJECT, BATCH, TOO_MANY, TOO_DEEP, INVALID = 0, 5, 2, 3, 4  # the kinds that matter here


def scan_line(line: bytes, names: _Names, max_elems: int) -> Scan:
    """The C pass (in a worker thread: it releases the GIL)."""
    assert _scan is not None
    if FAULTS_ON:
        inject("scan")
    result: Scan = _scan(line, _TOP, _PARAMS, names.fields, MAX_MEMBERS, BIG, max_elems)
    return result


class _Tokens:
    """Big values swapped out of the small line, and put back as views of the whole one."""

    __slots__ = ("spans", "view")

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.spans: dict[bytes, tuple[int, int]] = {}

    def token(self, start: int, end: int) -> bytes:
        token = b'"\\u0000hostd-' + _NONCE + b"-" + str(len(self.spans)).encode() + b'"'
        self.spans[token] = (start, end)
        return token

    def back(self, raw: msgspec.Raw) -> msgspec.Raw:
        span = self.spans.get(bytes(raw)) if len(raw) < 64 else None
        return raw if span is None else msgspec.Raw(self.view[span[0] : span[1]])


Rebuilt = tuple[Envelope, bool] | WireError | PeerAnswer


def rebuild(line: bytes, scan: Scan, decoders: Callable[[str], ParamsDecoder | None]) -> Rebuilt | None:
    """What the whole object line decodes to, read from the small one; None: go the usual way.
    ``(env, typed)``: typed when ``env.params`` is the method's struct already."""
    kind, _, top, params, _, _ = scan
    if kind == INVALID and params is not None:
        return _invalid(line, params)
    if kind != OBJECT or top is None or params is None:
        return None
    return _one(line, memoryview(line), top, 0, len(top), _by_member(params), decoders)


def _by_member(params: Records) -> dict[int, list[tuple[int, ...]]]:
    """The params records grouped by the envelope member (its ordinal in top) they belong to."""
    grouped: dict[int, list[tuple[int, ...]]] = {}
    for record in params:
        grouped.setdefault(record[4], []).append(record)
    return grouped


def _one(
    line: bytes,
    view: memoryview,
    top: Records,
    lo: int,
    hi: int,
    params: dict[int, list[tuple[int, ...]]],
    decoders: Callable[[str], ParamsDecoder | None],
) -> Rebuilt:
    """One envelope object, from its members ``top[lo:hi]``."""
    tokens = _Tokens(view)
    parts: list[bytes | memoryview] = []
    params_at = -1
    for ordinal in range(lo, hi):
        index, key_start, start, end, _ = top[ordinal]
        parts.append(b"," if parts else b"{")
        if index == _PARAMS:
            params_at = ordinal
        if end - start >= BIG and index in _RAW:
            parts += [view[key_start:start], tokens.token(start, end)]
        elif end - start >= BIG and line[start] in _OPEN:  # a scalar's place: the same error
            parts += [view[key_start:start], b"[]" if line[start] == ord("[") else b"{}"]
        else:
            parts.append(view[key_start:end])
    parts.append(b"}" if parts else b"{}")
    env = decode_envelope(b"".join(parts))
    if not isinstance(env, Envelope):
        return env
    env.params, env.result, env.error = tokens.back(env.params), tokens.back(env.result), tokens.back(env.error)
    decoder = decoders(env.method) if type(env.method) is str else None
    if decoder is None or params_at < 0 or line[top[params_at][2]] != ord("{"):
        return env, False  # no method, or params that are not an object: errors, read as usual
    fields = _fields_of(decoder)
    members: dict[str, msgspec.Raw] = {}
    swapped = False
    for key_start, key_end, start, end, _ in params.get(params_at, ()):  # the last params member's
        key = _key(view[key_start:key_end])
        field = fields.by_fold.get(fold_name(key))
        if field is None:
            continue  # another method's field: ignored by this one
        if end - start >= BIG and field[1]:
            members[key] = msgspec.Raw(tokens.token(start, end))
            swapped = True
        else:
            members[key] = msgspec.Raw(view[start:end])
    if not swapped:  # nothing big to skip: the strict decode reads params in place, as usual
        try:
            env.params = decoder.exact(view[top[params_at][2] : top[params_at][3]])
            return env, True
        except (msgspec.ValidationError, RecursionError):
            pass  # an unknown key (it stops at the first), a folded one, or a mistake: fold
    small = _encode(fold_object(decoder.struct, members))
    try:
        typed = decoder.exact(small)
    except msgspec.DecodeError as e:  # what recover() would raise: folding small again changes nothing
        env.params = cast(Any, decoder.error(e))  # answered by envelope() after its own checks, as usual
        return env, True
    except RecursionError:
        env.params = cast(Any, ParseError("parse error: nesting too deep"))
        return env, True
    for name, raw in fields.by_fold.values():
        if raw:
            value = getattr(typed, name)
            if value is not (back := tokens.back(value)):
                typed = msgspec.structs.replace(typed, **{name: back})
    env.params = typed
    return env, True


def _elements(
    line: bytes, scan: Scan, decoders: Callable[[str], ParamsDecoder | None]
) -> Iterator[tuple[Envelope | WireError | PeerAnswer, int, bool]]:
    """A batch's elements, each as ``batches.answer_batch`` would decode it, one at a time."""
    _, _, top, params, elems, _ = scan
    assert top is not None and params is not None and elems is not None
    view = memoryview(line)
    grouped = _by_member(params)
    bounds: dict[int, list[int]] = {}  # element -> [first, last + 1] of its members in top
    for ordinal, record in enumerate(top):
        bounds.setdefault(record[4], [ordinal, ordinal])[1] = ordinal + 1
    for element, (start, end) in enumerate(elems):
        first = line[start]
        if first != ord("{"):  # not an object: the same error from a small value of the same kind
            small = b"[]" if first == ord("[") else b'""' if first == ord('"') else view[start:end]
            yield decode_envelope(bytes(small)), end - start, False
            continue
        lo, hi = bounds.get(element, (0, 0))
        out = _one(line, view, top, lo, hi, grouped, decoders)
        if isinstance(out, tuple):
            yield out[0], end - start, out[1]
        else:
            yield out, end - start, False


def _invalid(line: bytes, big: Records) -> WireError | None:
    """The usual answer to a line that is not JSON, read with the big values that ended before
    the error cut down to ``0``: msgspec reads little, and the byte offset its message names is
    moved on by what was cut (every cut lies before the error). None: msgspec reads it after
    all (the scanner refused more): go the usual way."""
    if not big:
        return None  # nothing to cut: the usual way costs no more
    parts: list[bytes | memoryview] = []
    view = memoryview(line)
    done = removed = 0
    for start, end in sorted(big):
        if start < done:
            continue  # inside a value cut already (a member of a batch element)
        parts += [view[done:start], b"0"]
        removed += end - start - 1
        done = end
    parts.append(view[done:])
    out = decode_envelope(b"".join(parts))
    if not isinstance(out, ParseError):
        return None
    return ParseError(_byte().sub(lambda m: f"(byte {int(m[1]) + removed})", out.message))


@functools.cache  # compiled on the first invalid long line: most daemons never see one
def _byte() -> re.Pattern[str]:
    return re.compile(r"\(byte (\d+)\)")  # where msgspec's message names the offset of an error


def _too_deep(depth: int) -> bool:
    """Would msgspec refuse this nesting here? A probe of that depth asks it (cheap: 2 * depth bytes)."""
    try:
        _skip(b"[" * depth + b"]" * depth)
    except RecursionError:
        return True
    return False


def answer(dispatcher: Dispatcher, line: bytes, scan: Scan | None, reply: Reply) -> Iterator[None] | None:
    """Answer one scanned line as ``Dispatcher.line`` would answer it. A batch is answered by
    the steps returned (``batches.serve_batch``): the caller runs them, and may yield between."""
    if line[:1] == b"[" and len(line) > dispatcher.max_line:  # answers never come in batches
        dispatcher.fail(reply, InvalidRequest("message too large"))
        return None
    if scan is not None and (scan[0] == TOO_DEEP or (scan[1] > SAFE_DEPTH and _too_deep(scan[1]))):
        dispatcher.fail(reply, ParseError("parse error: nesting too deep"))
        return None
    if scan is not None and scan[0] == BATCH and scan[4] is not None:
        return serve_batch(dispatcher, reply, scan[5], _elements(line, scan, dispatcher.decoder))
    out = None if scan is None else rebuild(line, scan, dispatcher.decoder)
    if out is None:
        dispatcher.line(line, reply)
    elif isinstance(out, tuple):
        dispatcher.decoded(out[0], len(line), reply, out[1])
    else:
        dispatcher.decoded(out, len(line), reply)
    return None
