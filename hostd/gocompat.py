"""Go semantics that CLIProxyAPI relies on, written once for the rest of hostd.

Plugins and the proxy are Go programs: where hostd must agree with them byte for byte
(credential indexes and entries, error texts, which JSON keys match which field), it
follows the Go standard library rather than Python's nearest equivalent:

- strings: ``strings.TrimSpace`` and ``strings.ToLower`` (:func:`go_trim`, :func:`go_lower`);
  ``strconv.Quote``, what ``%q`` prints (:func:`go_quote`);
- numbers: ``strconv.ParseBool`` and ``ParseInt`` (:func:`parse_go_bool`,
  :func:`parse_go_int`), a JSON number read into a ``float64`` then truncated to an ``int``
  (:func:`go_truncate`), and the ``float64`` range ``encoding/json`` enforces
  (:func:`overflows_float64`);
- times: ``time.Parse(time.RFC3339, …)`` and ``Format(time.RFC3339Nano)`` in UTC
  (:func:`parse_rfc3339`, :func:`format_rfc3339_nano`), as integer nanoseconds since the
  epoch so that no precision is lost;
- JSON: ``encoding/json``'s case-insensitive key matching (:func:`fold_name`) and its
  base64 reading of ``[]byte`` fields (:func:`go_b64decode`).

Pure functions only: nothing here does I/O or knows the wire format.
"""

from __future__ import annotations

import binascii
import functools
import re
from typing import Any

import msgspec

__all__ = [
    "GO_SPACE",
    "INT64_MAX",
    "INT64_MIN",
    "ZERO_TIME",
    "fold_name",
    "format_rfc3339_nano",
    "go_b64decode",
    "go_lower",
    "go_quote",
    "go_trim",
    "go_truncate",
    "overflows_float64",
    "parse_go_bool",
    "parse_go_int",
    "parse_rfc3339",
]

ZERO_TIME = "0001-01-01T00:00:00Z"
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# unicode.IsSpace, which strings.TrimSpace uses (Python's str.strip also drops \x1c-\x1f).
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


@functools.cache  # compiled on first use, as the others here: not every start parses
def _go_int() -> re.Pattern[str]:
    return re.compile(r"[+-]?[0-9]+", re.ASCII)  # strconv.ParseInt(s, 10, 64) syntax


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


# Strings -------------------------------------------------------------------------------


def go_trim(s: str) -> str:
    """``strings.TrimSpace``."""
    return s.strip(GO_SPACE)


def go_lower(s: str) -> str:
    """``strings.ToLower``: simple per-rune mapping (no final sigma, U+0130 becomes ``i``)."""
    if s.isascii():
        return s.lower()
    return "".join(c.lower()[0] for c in s)


_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(s: str) -> str:
    """``strconv.Quote`` (what ``fmt``'s ``%q`` prints for a string).

    Printable runes stay as they are; ``"`` and ``\\`` are escaped; control characters
    use Go's short escapes or ``\\xNN``; other unprintable runes ``\\uNNNN`` or
    ``\\UNNNNNNNN``; bytes that are not UTF-8 (surrogate escapes) ``\\xNN``.
    """
    out = ['"']
    for c in s:
        code = ord(c)
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif c in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[c])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif c.isprintable():
            out.append(c)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


# Numbers -------------------------------------------------------------------------------


def parse_go_bool(s: str) -> bool | None:
    """``strconv.ParseBool``: the value, or None when Go would refuse the text."""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    return None


def parse_go_int(s: str) -> int | None:
    """``strconv.ParseInt(s, 10, 64)`` / ``Atoi``: None on a syntax or range error."""
    if not _go_int().fullmatch(s):
        return None
    value = int(s)
    return value if INT64_MIN <= value <= INT64_MAX else None


def go_truncate(value: int | float) -> int | None:
    """``int(f)`` of a JSON number decoded as Go's ``float64``: toward zero.

    None where Go's conversion is undefined (outside the int64 range, NaN).
    """
    number = float(value)  # Go decodes every JSON number into a float64
    if not INT64_MIN <= number < -float(INT64_MIN):
        return None
    return int(number)


# A JSON number can only overflow a float64 with 309 or more digits in a row, or with an
# exponent of three digits or more: anything else is read without a walk. The scan maps
# every digit to 0 (and E to e, - to +) and looks for those shapes with plain substring
# searches, a few milliseconds per MiB (a regular expression took ten times longer).
_SHAPES = bytes.maketrans(b"123456789E-", b"000000000e+")
_HUGE_DIGITS = b"0" * 309
_any_decoder = msgspec.json.Decoder()


def overflows_float64(data: bytes) -> bool:
    """Whether the valid JSON ``data`` holds a number that Go's decoder refuses as out of
    range for a ``float64`` (msgspec keeps huge integers exact). A byte scan decides
    almost every document; only one that might hold such a number is walked."""
    shapes = data.translate(_SHAPES)
    if b"e000" not in shapes and b"e+000" not in shapes and _HUGE_DIGITS not in shapes:
        return False
    try:
        value = _any_decoder.decode(data)
    except msgspec.ValidationError:  # msgspec's own "Number out of range" (1e400)
        return True
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            try:
                float(item)
            except OverflowError:
                return True
    return False


# Times: integer nanoseconds since the Unix epoch, UTC --------------------------------


# time.Parse(time.RFC3339, s): its slow path also takes a one-digit hour and a comma.
@functools.cache
def _rfc3339() -> re.Pattern[str]:
    return re.compile(
        r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
        r"(?:[.,]([0-9]+))?(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))",
        re.ASCII,
    )


def _days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def _days_in(m: int, y: int) -> int:
    if m == 2:
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def parse_rfc3339(text: str) -> int | None:
    """``time.Parse(time.RFC3339, text)`` as nanoseconds since the epoch, or None."""
    match = _rfc3339().fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= _days_in(month, year) and hour < 24 and minute < 60 and second < 60):
        return None
    fraction = match.group(7) or ""
    nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
    offset = 0
    if match.group(8) is None:
        oh, om = int(match.group(10)), int(match.group(11))
        if oh > 24 or om > 60:
            return None
        offset = (oh * 60 + om) * 60 * (-1 if match.group(9) == "-" else 1)
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    return seconds * 1_000_000_000 + nanos


def format_rfc3339_nano(ns: int | None) -> str:
    """UTC ``time.RFC3339Nano``: nanoseconds with trailing zeros trimmed; unset is Go's
    zero time. A time whose UTC year falls outside 0..9999 cannot be written by Go's
    ``MarshalJSON`` either: zero."""
    if ns is None:
        return ZERO_TIME
    seconds, nanos = divmod(ns, 1_000_000_000)
    days, in_day = divmod(seconds, 86400)
    y, m, d = _civil_from_days(days)
    if not 0 <= y <= 9999:
        return ZERO_TIME
    hh, rest = divmod(in_day, 3600)
    mm, ss = divmod(rest, 60)
    text = f"{y:04d}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}"
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


# JSON ------------------------------------------------------------------------------------

# The only runes outside ASCII whose Unicode simple case folding orbit holds an ASCII
# letter (checked against Go's unicode.SimpleFold over every rune): long s and Kelvin.
_FOLD_TO_ASCII = {"\u017f": "S", "\u212a": "K"}


def fold_name(key: str) -> str:
    """``encoding/json``'s ``foldName`` for matching a key against ASCII field names.

    Two keys match a field case-insensitively exactly when their folds are equal: ASCII
    letters fold to upper case, and the two runes whose fold orbit holds an ASCII
    letter (U+017F, U+212A) fold to it. Other runes are kept: they can never match an
    ASCII name, which every hostd field name is.
    """
    if key.isascii():
        return key.upper()
    return "".join(c.upper() if c.isascii() else _FOLD_TO_ASCII.get(c, c) for c in key)


def go_b64decode(text: str) -> bytes | None:
    """``base64.StdEncoding.DecodeString`` as ``encoding/json`` reads a ``[]byte``:
    ``\\r`` and ``\\n`` anywhere are ignored, padding is required; None when invalid."""
    if "\r" in text or "\n" in text:
        text = text.replace("\r", "").replace("\n", "")
    if len(text) % 4:
        return None
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
