"""hostd.gocompat: Go's string, number, time and JSON-key semantics, vector by vector.

The expected values are what Go's standard library gives for the same input (taken from
Go 1.27's ``strconv``, ``time``, ``unicode`` and ``encoding/json``).
"""

from __future__ import annotations

import pytest

from hostd.gocompat import (
    ZERO_TIME,
    fold_name,
    format_rfc3339_nano,
    go_b64decode,
    go_quote,
    go_truncate,
    overflows_float64,
    parse_go_int,
    parse_rfc3339,
)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("abc", '"abc"'),
        ("", '""'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
        ("\x00\x1f\x7f", '"\\x00\\x1f\\x7f"'),
        ("héllo 世界", '"héllo 世界"'),
        ("\u00a0", '"\\u00a0"'),  # not printable to Go (a space other than U+0020)
        ("\u200b", '"\\u200b"'),
        ("\U000e0001", '"\\U000e0001"'),
        (" x ", '" x "'),
        (b"\xff".decode("utf-8", "surrogateescape"), '"\\xff"'),
    ],
)
def test_go_quote_matches_strconv_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


def test_fold_name_matches_encoding_json_folding() -> None:
    assert fold_name("url") == fold_name("URL") == fold_name("Url") == "URL"
    assert fold_name("Auth_Index") == fold_name("auth_index")
    assert fold_name("authindex") != fold_name("auth_index")  # underscores are significant
    assert fold_name("\u212aind") == fold_name("kind")  # KELVIN SIGN folds with k
    assert fold_name("\u017ftream") == fold_name("stream")  # LATIN SMALL LETTER LONG S with s
    assert fold_name("\u0131d") != fold_name("id")  # dotless i is its own fold orbit in Go
    assert fold_name("\u0130d") != fold_name("id")


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        ("", b""),
        ("aGk=", b"hi"),
        ("aG\r\nk=", b"hi"),
        ("\naGk=\n", b"hi"),
        ("YWJj\r\nZGVm", b"abcdef"),
    ],
)
def test_go_b64decode_ignores_line_breaks(text: str, decoded: bytes) -> None:
    assert go_b64decode(text) == decoded


@pytest.mark.parametrize("text", ["aGk", "aG k=", "aGk=\t", "a-_=", "aGk=aGk="])
def test_go_b64decode_refuses_what_go_refuses(text: str) -> None:
    assert go_b64decode(text) is None


def test_parse_go_int_is_parseint_base_10_64_bit() -> None:
    assert parse_go_int("+5") == 5
    assert parse_go_int("-9223372036854775808") == -(1 << 63)
    for bad in ("9223372036854775808", "1_000", " 1", "0x10", "", "\u0661"):  # an Arabic-Indic digit
        assert parse_go_int(bad) is None, bad


def test_go_truncate_is_int_of_a_float64() -> None:
    assert go_truncate(2.9) == 2
    assert go_truncate(-2.9) == -2
    assert go_truncate(9007199254740993) == 9007199254740992  # read as a float64 first
    assert go_truncate(1e19) is None
    assert go_truncate(float("nan")) is None


def test_overflows_float64_only_for_numbers_go_refuses() -> None:
    assert not overflows_float64(b'{"a":1' + b"0" * 300 + b"}")
    assert overflows_float64(b'{"a":1' + b"0" * 400 + b"}")
    assert overflows_float64(b'{"a":[{"b":-1e400}]}')
    assert not overflows_float64(b'{"a":1e308,"b":"1' + b"0" * 400 + b'"}')  # digits in a string
    assert not overflows_float64(b'{"a":1e-400}')  # underflows to zero, as Go reads it


def test_rfc3339_round_trips_with_nanoseconds_trimmed() -> None:
    assert format_rfc3339_nano(None) == ZERO_TIME
    assert format_rfc3339_nano(parse_rfc3339(ZERO_TIME)) == ZERO_TIME
    assert format_rfc3339_nano(parse_rfc3339("2026-11-25T12:59:00.120+01:00")) == "2026-11-25T11:59:00.12Z"
    assert format_rfc3339_nano(parse_rfc3339("2026-11-25T11:59:00.000000001Z")) == "2026-11-25T11:59:00.000000001Z"
    assert format_rfc3339_nano(parse_rfc3339("9999-12-31T23:59:59-01:00")) == ZERO_TIME  # year 10000 in UTC
