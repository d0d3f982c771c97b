"""hostd._scan (hostd/_scan.c), the C line scanner behind hostd/rpc/scan.py, against msgspec.

The scanner may refuse more than msgspec (such a line is read the usual way) but never less;
it must accept every valid JSON text, and the spans it reports must be exactly the members
hostd rebuilds a small line from. Generated texts (random whitespace, escapes, every kind of
number) and byte-level mutations of them check the first three; constructed lines check the
depth limit, the big values of an invalid line (blanked as ``_invalid`` blanks them, msgspec
must word the same error), ``max_members`` and the argument types.

``HOSTD_FUZZ_EXAMPLES`` sets the number of examples of the whole file (default: a bounded CI
profile, derandomized so a failure reproduces), split evenly over its properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostd._scan import scan
from hostd.gocompat import fold_name
from tests.support.fuzz import fuzz_settings

FUZZ = fuzz_settings(600, 5)  # 5 properties

TOP = (b"jsonrpc", b"id", b"method", b"params", b"result", b"error")
PARAMS = 3
NAMES = (b"level", b"message", b"fields", b"kind")  # params field names, as spelled
FOLDED = tuple(fold_name(n.decode()).encode() for n in NAMES)
MANY = 1 << 20  # max_members that no generated line reaches
MAX_DEPTH = 4096
MSGSPEC_DEPTH = 900  # below this msgspec never raises RecursionError

_skip = msgspec.json.Decoder(msgspec.Raw).decode
_value = msgspec.json.Decoder(float_hook=Decimal).decode  # 1e400 is a value, not "out of range"
_key = msgspec.json.Decoder(str).decode

Scan = tuple[int, int, tuple[tuple[int, ...], ...] | None, tuple[tuple[int, ...], ...] | None]


def run(line: bytes | bytearray, big_min: int = MANY, max_members: int = MANY) -> Scan:
    """The scan as the tests below read it: (kind, max_depth, top, params), with a batch's kind
    5 read as 1 ("another value") and the element index of top records left out (the batch
    tests at the end check both)."""
    kind, depth, top, params, _, _ = scan(line, TOP, PARAMS, NAMES, max_members, big_min, MANY)
    if top is not None:
        top = tuple(record[:4] for record in top)
    return (1 if kind == 5 else kind), depth, top, params


def msgspec_error(line: bytes) -> str | None:
    """msgspec's answer when it only skips the text: None when valid, else its message."""
    try:
        _skip(line)
    except msgspec.DecodeError as e:
        return str(e)
    return None


# --- generated JSON texts -----------------------------------------------------------------

WS = st.sampled_from([b"", b"", b"", b" ", b"\n", b"\t", b"\r", b" \r\n\t "])
SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "/": "\\/"}


def _u(cp: int, upper: bool) -> str:
    text = f"\\u{cp:04x}"
    return text.upper().replace("\\U", "\\u") if upper else text


def encode_char(c: str, mode: int) -> str:
    """One character of a JSON string: raw (modes 0, 1), short escape (0) or ``\\uXXXX`` (2, 3)."""
    cp = ord(c)
    if mode >= 2 or (cp < 0x20 and c not in SHORT):
        if cp >= 0x10000:
            v = cp - 0x10000
            return _u(0xD800 + (v >> 10), mode == 3) + _u(0xDC00 + (v & 0x3FF), mode == 3)
        return _u(cp, mode == 3)
    if mode == 0 and c in SHORT:
        return SHORT[c]
    if c in '"\\' or cp < 0x20:
        return SHORT[c]
    return c


@st.composite
def spelled(draw: st.DrawFn, text: str) -> bytes:
    """``text`` as a JSON string, each character raw or escaped at random."""
    modes = draw(st.lists(st.integers(0, 3), min_size=len(text), max_size=len(text)))
    return ('"' + "".join(encode_char(c, m) for c, m in zip(text, modes, strict=True)) + '"').encode()


TEXT = st.text(max_size=10) | st.sampled_from(["level", "params", "method", "LEVEL", "id", "\u017f", "\u212a", "é€😀"])
STRINGS = TEXT.flatmap(spelled)
NUMBERS = st.one_of(
    st.integers().map(lambda i: str(i).encode()),
    st.integers(min_value=10**18, max_value=10**60).map(lambda i: str(-i if i % 2 else i).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.sampled_from(
        [b"-0", b"0", b"-0.0", b"1e400", b"-1E-400", b"0e0", b"1E+2", b"2.5e-3", b"-0.000001e-7", b"1" * 40]
    ),
)
LEAVES = st.one_of(st.sampled_from([b"true", b"false", b"null"]), NUMBERS, STRINGS).map(lambda t: (t, 0))

Node = tuple[bytes, int]  # a JSON text and its nesting depth (a scalar: 0)


@st.composite
def arrays(draw: st.DrawFn, children: st.SearchStrategy[Node]) -> Node:
    items = draw(st.lists(children, max_size=5))
    inner = b",".join(draw(WS) + text + draw(WS) for text, _ in items)
    return b"[" + (inner or draw(WS)) + b"]", 1 + max((d for _, d in items), default=0)


@st.composite
def objects(draw: st.DrawFn, children: st.SearchStrategy[Node]) -> Node:
    members = draw(st.lists(st.tuples(STRINGS, children), max_size=5))
    inner = b",".join(draw(WS) + k + draw(WS) + b":" + draw(WS) + v + draw(WS) for k, (v, _) in members)
    return b"{" + (inner or draw(WS)) + b"}", 1 + max((d for _, (_, d) in members), default=0)


VALUES: st.SearchStrategy[Node] = st.recursive(
    LEAVES, lambda children: arrays(children) | objects(children), max_leaves=24
)
MEMBER_VALUES: st.SearchStrategy[Node] = st.recursive(  # smaller: an envelope holds many
    LEAVES, lambda children: arrays(children) | objects(children), max_leaves=6
)


@st.composite
def texts(draw: st.DrawFn) -> Node:
    text, depth = draw(VALUES)
    return draw(WS) + text + draw(WS), depth


# --- generated envelopes, with the records the scanner must report -------------------------


@dataclass
class Line:
    """A top-level object built member by member, with every position recorded."""

    buf: bytearray = field(default_factory=bytearray)
    top: list[tuple[int, int, int, int]] = field(default_factory=list)
    params: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    top_values: list[bytes] = field(default_factory=list)  # each top record's value, as written
    params_values: list[bytes] = field(default_factory=list)

    @property
    def values(self) -> list[bytes]:
        return self.top_values + self.params_values

    def put(self, data: bytes) -> int:
        self.buf += data
        return len(self.buf)


def fold_spelling(name: str, cases: list[int]) -> str:
    """``name`` (folded, ASCII) in another case, S as U+017F and K as U+212A at random."""
    out = []
    for c, m in zip(name, cases, strict=True):
        if c == "S" and m == 2:
            out.append("\u017f")
        elif c == "K" and m == 2:
            out.append("\u212a")
        else:
            out.append(c.lower() if m == 1 else c)
    return "".join(out)


PARAM_NAMES = [n.decode() for n in FOLDED] + ["SKS", "KINDS"]  # the last two: not fields
NEAR_PARAMS = st.sampled_from(["LEVELS", "leve", "level ", " level", "lev\x00el", "levelĹ", "MESSAGEE", "field\u017f"])
NEAR_TOP = st.sampled_from(["Params", "METHOD", "param", "paramss", "id ", "Id", "jsonRPC", "errors", "résult"])


@st.composite
def param_keys(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 3))
    if kind <= 1:
        name = draw(st.sampled_from(PARAM_NAMES))
        return fold_spelling(name, draw(st.lists(st.integers(0, 2), min_size=len(name), max_size=len(name))))
    if kind == 2:
        return draw(NEAR_PARAMS)
    return draw(st.text(max_size=8))


def winners(
    members: list[tuple[str, tuple[int, int, int, int, int], bytes]],
) -> list[tuple[tuple[int, int, int, int, int], bytes]]:
    """The records of one params object, as hostd's Go-style decode picks its members: keys in
    first-occurrence order, each with its last value (a dict); per field, the exact key, else
    the folded spelling last in that order; fields in the order of their first member."""
    seen: dict[str, tuple[int, tuple[int, int, int, int, int], bytes]] = {}
    for i, (key, record, value) in enumerate(members):
        seen[key] = (seen[key][0] if key in seen else i, record, value)
    fields: dict[bytes, list[tuple[str, int, tuple[int, int, int, int, int], bytes]]] = {}
    for key, (first, record, value) in seen.items():
        fields.setdefault(fold_name(key).encode(), []).append((key, first, record, value))
    out = []
    for folded, spellings in sorted(fields.items(), key=lambda kv: min(s[1] for s in kv[1])):
        exact = NAMES[FOLDED.index(folded)].decode()
        winner = next((s for s in spellings if s[0] == exact), None) or max(spellings, key=lambda s: s[1])
        out.append((winner[2], winner[3]))
    return out


@st.composite
def envelopes(draw: st.DrawFn) -> Line:
    """A top-level object: named members (exact, maybe escaped), near misses and junk, with
    params objects whose keys fold (or do not) to FOLDED; duplicates possible."""
    line = Line()
    line.put(b"{" + draw(WS))
    n = draw(st.integers(0, 6))
    for i in range(n):
        if i:
            line.put(b"," + draw(WS))
        which = draw(st.integers(0, 3))
        if which <= 1:
            key = draw(st.sampled_from(TOP)).decode()
        elif which == 2:
            key = draw(NEAR_TOP)
        else:
            key = draw(st.text(max_size=8))
        key_text = draw(spelled(key))
        ks = len(line.buf)
        line.put(key_text + draw(WS) + b":" + draw(WS))
        vs = len(line.buf)
        named = key.encode() in TOP
        ordinal = len(line.top)
        if draw(st.integers(0, 2)) and key in ("params", "Params", "param"):
            members: list[tuple[str, tuple[int, int, int, int, int], bytes]] = []
            line.put(b"{" + draw(WS))
            for j in range(draw(st.integers(0, 6))):
                if j:
                    line.put(b"," + draw(WS))
                pkey = draw(param_keys())
                pks = len(line.buf)
                pke = line.put(draw(spelled(pkey)))
                line.put(draw(WS) + b":" + draw(WS))
                pvs = len(line.buf)
                pvalue = draw(MEMBER_VALUES)[0]
                pve = line.put(pvalue)
                if named and key == "params" and fold_name(pkey).encode() in FOLDED:
                    members.append((pkey, (pks, pke, pvs, pve, ordinal), pvalue))
                line.put(draw(WS))
            line.put(b"}")
            for record, value in winners(members):
                line.params.append(record)
                line.params_values.append(value)
            members.clear()
        else:
            value = draw(MEMBER_VALUES)[0]
            line.put(b"[" + value + b"]" if named and key == "params" and value.startswith(b"{") else value)
        ve = len(line.buf)
        if named:
            line.top.append((TOP.index(key.encode()), ks, vs, ve))
            line.top_values.append(bytes(line.buf[vs:ve]))
        line.put(draw(WS))
    line.put(b"}" + draw(WS))
    return line


# --- mutations ------------------------------------------------------------------------------

SPECIAL = b'\x00\x01"\\,:[]{}0.e-+ \xff\x80\xc3\xed'
BYTES = st.sampled_from(list(SPECIAL)) | st.integers(0, 255)


@st.composite
def mutated(draw: st.DrawFn, text: bytes) -> bytes:
    buf = bytearray(text)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        at = draw(st.integers(0, len(buf)))
        if op == "insert":
            buf[at:at] = bytes([draw(BYTES)])
        elif op == "delete" and at < len(buf):
            del buf[at]
        elif op == "replace" and at < len(buf):
            buf[at] = draw(BYTES)
        elif op == "truncate":
            del buf[at:]
    return bytes(buf)


MUTATED_TEXTS = texts().flatmap(lambda node: mutated(node[0]))
MUTATED_ENVELOPES = envelopes().flatmap(lambda line: mutated(bytes(line.buf)))


def check_not_laxer(line: bytes, big_min: int) -> None:
    kind, depth, _, _ = run(line, big_min)
    if kind in (0, 1):
        try:
            _skip(line)
        except RecursionError:
            assert depth > MSGSPEC_DEPTH, line
        except msgspec.DecodeError as e:
            raise AssertionError(f"scan accepted (kind {kind}) what msgspec refuses: {line!r}: {e}") from None
    elif kind == 4 and msgspec_error(line) is None:
        # refusing more is allowed only where the scanner is stricter on purpose: UTF-8 in keys
        assert any(b >= 0x80 for b in line), f"scan refused valid ASCII JSON: {line!r}"


# --- properties -----------------------------------------------------------------------------


@FUZZ
@given(MUTATED_TEXTS)
def test_mutated_texts_are_never_accepted_when_msgspec_refuses_them(line: bytes) -> None:
    check_not_laxer(line, MANY)


@FUZZ
@given(MUTATED_ENVELOPES, st.integers(1, 8))
def test_mutated_envelopes_are_never_accepted_when_msgspec_refuses_them(line: bytes, big_min: int) -> None:
    check_not_laxer(line, big_min)


@FUZZ
@given(texts())
def test_valid_json_is_accepted_with_its_depth(node: Node) -> None:
    text, depth = node
    assert msgspec_error(text) is None
    kind, max_depth, top, params = run(text)
    assert kind == (0 if text.strip(b" \t\r\n").startswith(b"{") else 1), text
    assert max_depth == max(depth, 1) if depth else max_depth == 0
    assert top is not None and params is not None


@FUZZ
@given(envelopes())
def test_spans_are_every_named_member_and_each_fields_winning_params_member(line: Line) -> None:
    text = bytes(line.buf)
    assert msgspec_error(text) is None
    kind, _, top, params = run(text)
    assert kind == 0
    assert top is not None and params is not None
    assert list(top) == line.top
    assert list(params) == line.params
    for (index, ks, vs, ve), value in zip(top, line.values[: len(top)], strict=True):
        assert _key(text[ks : key_end(text, ks)]) == TOP[index].decode()
        assert _value(text[vs:ve]) == _value(value)
    for (ks, ke, vs, ve, ordinal), value in zip(params, line.values[len(top) :], strict=True):
        assert fold_name(_key(text[ks:ke])).encode() in FOLDED
        assert TOP[top[ordinal][0]] == b"params"
        assert top[ordinal][2] < ks and ve < top[ordinal][3]
        assert _value(text[vs:ve]) == _value(value)


def key_end(text: bytes, ks: int) -> int:
    """The end (past the closing quote) of the JSON string that starts at ks."""
    i = ks + 1
    while text[i] != ord('"'):
        i += 2 if text[i] == ord("\\") else 1
    return i + 1


@FUZZ
@given(MUTATED_ENVELOPES, st.integers(1, 8))
def test_blanking_the_big_values_of_an_invalid_line_keeps_msgspecs_error(line: bytes, big_min: int) -> None:
    kind, _, top, big = run(line, big_min)
    if kind != 4:
        return
    assert top is None and big is not None
    assert msgspec_error(blanked(line, big)) == msgspec_error(line), (line, big)


def blanked(line: bytes, big: tuple[tuple[int, ...], ...]) -> bytes:
    """hostd/rpc/scan.py ``_invalid``: every big value becomes ``0`` and spaces."""
    out = bytearray(line)
    for start, end in big:
        assert 0 <= start < end <= len(line)
        out[start] = 0x30
        out[start + 1 : end] = b" " * (end - start - 1)
    return bytes(out)


# --- constructed lines ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 255, 256, 257, 512, 1000, 2048, 4095, 4096])
def test_max_depth_is_the_deepest_nesting_up_to_the_limit(n: int) -> None:
    assert run(b"[" * n + b"]" * n) == (1, n, (), ())
    kind, depth, _, params = run(b'{"a":' * n + b"1" + b"}" * n)
    assert (kind, depth, params) == (0, n, ())


@pytest.mark.parametrize("line", [b"[" * 4097 + b"]" * 4097, b"[" * 5000 + b"]" * 5000, b"[" * 5000, b'{"a":' * 5000])
def test_nesting_past_the_limit_is_kind_3(line: bytes) -> None:
    assert run(line) == (3, MAX_DEPTH, None, None)


def test_nesting_past_the_limit_after_an_error_is_kind_4() -> None:
    kind, depth, top, big = run(b"[" * 10 + b"x" + b"[" * 5000 + b"]" * 5010)
    assert (kind, depth, top, big) == (4, 10, None, ())
    kind, depth, top, big = run(b'{"id":1,]' + b"[" * 5000)
    assert (kind, depth, top) == (4, 1, None)


def test_the_big_values_before_an_error_are_reported_and_blanking_them_keeps_msgspecs_error() -> None:
    big_min = 64
    nested = b"[" * 50 + b'"' + b"n" * 40 + b'"' + b"]" * 50  # >= big_min, and deep for msgspec to read
    long = b'"' + b"s" * 100 + b'"'
    exact = b'"' + b"e" * (big_min - 2) + b'"'  # exactly big_min long
    short = b'"' + b"e" * (big_min - 3) + b'"'  # one short
    parts = [
        b'{"jsonrpc":"2.0","result":',
        long,
        b',"params":{"pad":',
        nested,
        b',"level":',
        short,
        b',"deep":{"x":',
        long,
        b"}",
        b',"other":',
        exact,
        b'},"junk":',
        exact,
        b',"after":',
        long,
        b" 1,",
        long,
        b"}",
    ]
    line = b"".join(parts)

    def span(i: int) -> tuple[int, int]:
        start = sum(len(p) for p in parts[:i])
        return start, start + len(parts[i])

    params_start = span(2)[0] + len(b',"params":')
    params_end = span(11)[0] + 1
    expected = [
        span(1),  # result
        span(3),  # params.pad
        (span(7)[0] - len(b'{"x":'), span(8)[1]),  # params.deep (its own member is not params')
        span(10),  # params.other: exactly big_min
        (params_start, params_end),  # params itself
        span(12),  # junk, a top-level member too
        span(14),  # after: it ended before the error (the 1 after it)
    ]  # the last string comes after the error
    kind, _, top, big = run(line, big_min)
    assert (kind, top) == (4, None)
    assert big is not None and list(big) == expected
    error = msgspec_error(line)
    assert error is not None and f"(byte {span(15)[0] + 1})" in error
    blank = blanked(line, big)
    assert len(blank) == len(line) and blank.count(b"[") == 0
    with pytest.raises(msgspec.DecodeError) as original:
        msgspec.json.decode(line)
    with pytest.raises(msgspec.DecodeError) as after:
        msgspec.json.decode(blank)
    assert str(after.value) == str(original.value)


def test_more_matches_than_max_members_is_kind_2() -> None:
    line = b'{"id":1,"id":2,"params":{"level":1,"LEVEL":2,"Level":3}}'
    assert run(line, max_members=3)[0] == 0
    assert run(line, max_members=2)[::2] == (2, None) and run(line, max_members=2)[3] is None  # 4 top records
    # Params report one member per field (the winner), however many spell it: never too many.
    line = b'{"params":{"LEVEL":2,"level":1,"Level":3,"LEVEL":4}}'
    kind, _, _, params = run(line, max_members=1)
    assert kind == 0 and params is not None and [line[a:b] for _, _, a, b, _ in params] == [b"1"]


def test_big_values_of_a_valid_line_are_not_matches() -> None:
    """kind 2 is "more matches than max_members": unnamed big values are no matches."""
    line = b'{"a":"xxxxxxxx","b":"xxxxxxxx","c":"xxxxxxxx"}'
    assert run(line, big_min=4, max_members=2) == (0, 1, (), ())


def test_utf8_is_checked_in_the_keys_that_are_compared_only() -> None:
    assert run(b'{"a":"\xff"}')[0] == 0
    assert run(b'{"params":{"level":"\xff\xc3"}}')[0] == 0
    assert run(b'{"x":{"\xff":1}}')[0] == 0  # a key deeper than params: skipped as msgspec skips it
    assert run(b'{"a\xff":1}')[0] == 4
    assert run(b'{"params":{"\xc3":1}}')[0] == 4
    assert run(b'{"params":{"\xed\xa0\x80":1}}')[0] == 4  # an encoded surrogate
    assert run('{"\u00e9":1,"params":{"\U0001f600":1}}'.encode())[0] == 0


def test_folded_params_keys() -> None:
    line = '{"params":{"l\\u0065vel":1,"\u212aind":2,"me\u017f\u017fage":3,"FIELD\\u017F":4,"levels":5}}'.encode()
    kind, _, top, params = run(line)
    assert kind == 0 and top is not None and params is not None
    assert [_key(line[ks:ke]) for ks, ke, *_ in params] == ["level", "\u212aind", "me\u017f\u017fage", "FIELD\u017f"]
    assert [_value(line[vs:ve]) for _, _, vs, ve, _ in params] == [1, 2, 3, 4]


def test_every_params_object_has_its_records() -> None:
    line = b'{"params":{"level":1},"id":1,"params":[{"level":2}],"params":{"kind":3},"Params":{"level":4}}'
    kind, _, top, params = run(line)
    assert kind == 0 and top is not None and params is not None
    assert [TOP[i] for i, *_ in top] == [b"params", b"id", b"params", b"params"]
    assert [(_value(line[vs:ve]), ordinal) for _, _, vs, ve, ordinal in params] == [(1, 0), (3, 3)]


def test_names_must_be_tuples_of_bytes_and_the_line_any_bytes_like() -> None:
    line = b'{"id":7}'
    assert scan(bytearray(line), TOP, PARAMS, NAMES, MANY, MANY, MANY) == (0, 1, ((1, 1, 6, 7, 0),), (), (), 0)
    assert scan(memoryview(line), TOP, PARAMS, NAMES, MANY, MANY, MANY)[0] == 0
    with pytest.raises(TypeError):
        scan(line, list(TOP), PARAMS, NAMES, MANY, MANY, MANY)
    with pytest.raises(TypeError):
        scan(line, TOP, PARAMS, list(NAMES), MANY, MANY, MANY)
    with pytest.raises(TypeError):
        scan(line, ("id",), PARAMS, NAMES, MANY, MANY, MANY)
    with pytest.raises(TypeError):
        scan(line, TOP, PARAMS, (b"ID", 1), MANY, MANY, MANY)
    with pytest.raises(TypeError):
        scan(line, (b"x",) * 257, PARAMS, NAMES, MANY, MANY, MANY)
    with pytest.raises(TypeError):
        scan(line.decode(), TOP, PARAMS, NAMES, MANY, MANY, MANY)


# --- batches ------------------------------------------------------------------------------


def test_a_batch_reports_its_elements_and_each_element_object_as_an_envelope() -> None:
    elements = [
        b'{"jsonrpc":"2.0","id":1,"method":"host.log","params":{"Level":"info","junk":[1]}}',
        b"[1,2]",
        b'"text"',
        b'{"id":2,"params":{"kind":"x"},"params":[]}',
        b"{}",
    ]
    line = b"[ " + b" , ".join(elements) + b" ]"
    kind, depth, top, params, elems, count = scan(line, TOP, PARAMS, NAMES, MANY, MANY, MANY)
    assert (kind, depth, count) == (5, 4, len(elements))
    assert elems is not None and [line[a:b] for a, b in elems] == elements
    assert top is not None and params is not None
    # Envelope members of element objects only, with the element each is in.
    assert [(TOP[r[0]], r[4]) for r in top] == [
        (b"jsonrpc", 0),
        (b"id", 0),
        (b"method", 0),
        (b"params", 0),
        (b"id", 3),
        (b"params", 3),
        (b"params", 3),
    ]
    assert [(line[r[0] : r[1]], line[r[2] : r[3]], r[4]) for r in params] == [
        (b'"Level"', b'"info"', 3),
        (b'"kind"', b'"x"', 5),
    ]


def test_a_batch_counts_every_element_and_reports_the_first_max_elems() -> None:
    line = b"[" + b",".join([b"1"] * 5000) + b"]"
    kind, _, _, _, elems, count = scan(line, TOP, PARAMS, NAMES, MANY, MANY, 1024)
    assert (kind, count) == (5, 5000)
    assert elems is not None and len(elems) == 1024


def test_an_invalid_batch_reports_its_big_elements_before_the_error() -> None:
    big = b"[" + b"1," * 100 + b"1]"
    line = b'[{"id":1},' + big + b"," + big + b",,]"
    kind, _, _, spans, _, count = scan(line, TOP, PARAMS, NAMES, MANY, 64, MANY)
    assert kind == 4 and count == 4
    assert spans is not None and [line[a:b] for a, b in spans] == [big, big]
    blanked = bytearray(line)
    for a, b in spans:
        blanked[a:b] = b"0" + b" " * (b - a - 1)
    assert msgspec_error(bytes(blanked)) == msgspec_error(line) is not None
