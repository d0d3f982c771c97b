"""The line framer: any split of the input gives the same lines; over-long lines are reported once."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hostd.rpc.framing import LineFramer


def feed_all(framer: LineFramer, chunks: list[bytes]) -> list[bytes | None]:
    out: list[bytes | None] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@settings(max_examples=2000)
@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
@example([b"x" * 16 + b"\r"], [])  # the cap and a \r, in one chunk: the \r is not counted
@example([b"x" * 16 + b"\r"], [17])
def test_any_split_gives_the_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    # A trailing \r does not count towards the cap (PROTOCOL §1: it is ignored).
    expected: list[bytes | None] = [line if len(line.removesuffix(b"\r")) <= 16 else None for line in lines]
    assert feed_all(LineFramer(16), split(data, cuts)) == expected


def test_partial_line_waits_for_its_newline() -> None:
    framer = LineFramer(100)
    assert framer.feed(b'{"a":') == []
    assert framer.feed(b"1}\n{") == [b'{"a":1}']
    assert framer.feed(b"}\n") == [b"{}"]


def test_over_long_partial_line_is_reported_before_its_newline_then_discarded() -> None:
    framer = LineFramer(4)
    assert framer.feed(b"123456") == [None]
    assert framer.feed(b"789") == []
    assert framer.feed(b"0\nok\n") == [b"ok"]


def test_line_of_exactly_the_limit_is_accepted() -> None:
    assert LineFramer(3).feed(b"abc\nabcd\n") == [b"abc", None]


def test_a_trailing_cr_counts_towards_neither_cap() -> None:
    answer = b'{"result":' + b"1" * 40 + b"}"  # 51 bytes: over the request cap, at the answer cap
    for chunks in ([answer + b"\r\n"], [answer, b"\r", b"\n"], [answer + b"\r", b"\n"]):
        assert feed_all(LineFramer(16, max_answer=len(answer)), chunks) == [answer + b"\r"]
    assert feed_all(LineFramer(16, max_answer=len(answer)), [answer + b"1\r\n"]) == [None]
    assert LineFramer(16).feed(b"x" * 16 + b"\r\n") == [b"x" * 16 + b"\r"]


@settings(max_examples=2000)
@given(
    st.lists(
        st.tuples(st.booleans(), st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"").replace(b'"', b""))),
        max_size=12,
    ),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_answers_may_be_longer_than_requests_whatever_the_split(
    items: list[tuple[bool, bytes]], cuts: list[int]
) -> None:
    lines = [(b'{"result":"' if is_answer else b'{"method":"') + body + b'"}' for is_answer, body in items]
    data = b"".join(line + b"\n" for line in lines)

    def allowed(line: bytes) -> bool:  # the framer's allowance; the dispatcher decides requests exactly
        return len(line) <= 16 or ((b'"result"' in line or b'"error"' in line) and len(line) <= 64)

    expected: list[bytes | None] = [line if allowed(line) else None for line in lines]
    assert feed_all(LineFramer(16, 64), split(data, cuts)) == expected
