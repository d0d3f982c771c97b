"""hostd._logline, the C log writer (issue 16): its ``plugin_line`` against the record path it
stands in for, its queue and thread, and its rate limit.

``Writer.plugin_line`` writes host.log's common line in one call. It must write exactly the
line the record path writes (``merge_redacted`` and one ``orjson.dumps`` of the record, the
reference here as in tests/test_log_fast_path.py) for every call it takes, and decline
(return 0, taking no token and queueing nothing) every call it cannot write so: hypothesis
generates the calls, spelling keys and values every way JSON allows. Every line is read back
from a real pipe.
"""

from __future__ import annotations

import json
import os
import random
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hostd import _logline
from hostd.log_format import dumps
from hostd.log_levels import LEVEL_NAMES
from hostd.redact import merge_redacted, plain_keys
from tests.support.fuzz import fuzz_settings

PLUGIN, SESSION = "p1", "session-1"
MEMBERS = b',"plugin":' + orjson.dumps(PLUGIN) + b',"session":' + orjson.dumps(SESSION)
LEVEL_MSG = {name: b',"level":"' + name.encode() + b'","msg":' for name in LEVEL_NAMES.values()}
MAX_LINE = 64 * 1024
T = 10.0
FUZZ = fuzz_settings(2000, 2)  # 2 properties


class Pipe:
    """A Writer on a pipe, and the lines it writes, read back as they come."""

    def __init__(self, max_queue_bytes: int = 8 << 20, max_lines: int = 100_000) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.writer = _logline.Writer(self.write_fd, max_queue_bytes, max_lines)
        self.pending = b""

    def line(self) -> bytes:
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.read_fd], [], [], T)
            assert ready, "no line was written"
            self.pending += os.read(self.read_fd, 1 << 16)
        line, self.pending = self.pending.split(b"\n", 1)
        return line + b"\n"

    def close(self) -> None:
        self.writer.flush(T)
        os.close(self.write_fd)
        os.close(self.read_fd)


@pytest.fixture(scope="module")
def pipe() -> Iterator[Pipe]:
    p = Pipe()
    yield p
    p.close()


def unlimited() -> _logline.Bucket:
    return _logline.Bucket(1e12, 1e12)


def call(pipe: Pipe, level: str, message: str, request_id: str | None, raw: bytes, **kw: Any) -> int:
    bucket = kw.pop("bucket", None) or unlimited()
    return pipe.writer.plugin_line(bucket, LEVEL_MSG[level], message, MEMBERS, request_id, raw, MAX_LINE)


def reference(ts: str, level: str, message: str, request_id: str | None, raw: bytes) -> bytes:
    """The record path's line (hostd/handlers/log.py), with the timestamp of the line written."""
    record: dict[str, Any] = {
        "ts": ts,
        "level": level,
        "msg": message.strip() or "plugin log",
        "plugin": PLUGIN,
        "session": SESSION,
    }
    if request_id:
        record["request_id"] = request_id
    fields = msgspec.json.decode(raw) if raw else None  # as hostd decodes them
    if fields:
        merge_redacted(record, fields)
    return dumps(record) + b"\n"


def check(pipe: Pipe, level: str, message: str, request_id: str | None, raw: bytes) -> int:
    status = call(pipe, level, message, request_id, raw)
    assert status in (0, 1)
    if status == 1:
        line = pipe.line()
        assert line == reference(orjson.loads(line)["ts"], level, message, request_id, raw), (message, raw)
    return status


# The calls it must take: the common lines ----------------------------------------------------

COMMON: list[tuple[str, str | None, bytes]] = [
    ("bench call", None, b'{"n":1,"k":"v"}'),
    ("no fields", None, b""),
    ("null fields", None, b"null"),
    ("empty fields", None, b"{}"),
    ("  padded message \n", None, b'{"n":1}'),
    ("   ", None, b""),  # blank: "plugin log"
    ("in a request", "req-7", b'{"model":"gpt-x","prompt_chars":12,"latency_ms":10.25}'),
    ("scalars", None, b'{"t":true,"f":false,"z":null,"neg":-3,"zero":0,"half":0.5,"x":1.0,"tiny":0.0001}'),
    ("spaced", None, b' { "a" : 1 ,\n\t"b" : "two" } '),
    ("caf\u00e9 \u2603 \U0001f600", None, '{"s":"caf\u00e9 \u2603 \U0001f600"}'.encode()),
    ('quotes " and \\ and \n and \x01', 'id "q"', b'{"u":"/path/to?x=1&y=2"}'),
    ("dashes and dots", None, b'{"x-request-id":"abc","user.name":"n","a_b":1}'),
]


@pytest.mark.parametrize(("message", "request_id", "raw"), COMMON, ids=[c[0][:20] for c in COMMON])
def test_the_common_lines_are_taken_and_written_as_the_record_path_writes_them(
    pipe: Pipe, message: str, request_id: str | None, raw: bytes
) -> None:
    assert check(pipe, "info", message, request_id, raw) == 1


# The calls it must decline: written otherwise by the record path ------------------------------

DECLINED: list[tuple[str, bytes]] = [
    ("secret key", b'{"api_key":"k"}'),
    ("secret spelt otherwise", b'{"X-Auth-Token":"k"}'),
    ("record key", b'{"msg":"spoof"}'),
    ("truncated", b'{"truncated":1}'),
    ("blank key", b'{"":1}'),
    ("padded key", b'{" k":1}'),
    ("escaped key", b'{"\\u0074oken":"k"}'),
    ("non-ASCII key", '{"to\u212aen":"k"}'.encode()),
    ("duplicate key", b'{"a":1,"a":2}'),
    ("nested object", b'{"a":{"b":1}}'),
    ("list", b'{"a":[1]}'),
    ("escaped value", b'{"a":"x\\ny"}'),
    ("big integer", b'{"a":18446744073709551616}'),
    ("minus zero", b'{"a":-0}'),
    ("exponent", b'{"a":1e3}'),
    ("trailing zero", b'{"a":1.50}'),
    ("17 digits", b'{"a":0.30000000000000004}'),
    ("too small", b'{"a":0.00001}'),
    ("not an object", b'"fields"'),
    ("invalid JSON", b'{"a":1,}'),
    ("invalid UTF-8", b'{"a":"\xff"}'),
    ("overlong UTF-8", b'{"a":"\xc0\xaf"}'),
    ("surrogate in UTF-8", b'{"a":"\xed\xa0\x80"}'),
    ("truncated UTF-8", b'{"a":"\xe2\x82"}'),
    ("trailing bytes", b'{"a":1} x'),
    ("65 fields", b"{" + b",".join(b'"k%d":1' % n for n in range(65)) + b"}"),
]


@pytest.mark.parametrize(("name", "raw"), DECLINED, ids=[d[0] for d in DECLINED])
def test_what_it_cannot_write_exactly_is_declined_and_takes_no_token(pipe: Pipe, name: str, raw: bytes) -> None:
    bucket = _logline.Bucket(0.0, 1.0)  # one token
    assert call(pipe, "info", name, None, raw, bucket=bucket) == 0
    assert bucket.take() is True  # the token is still there


@pytest.mark.parametrize(
    "message", ["\u3000padded by an ideographic space", "not UTF-8 \udcff"], ids=["unicode space", "surrogate"]
)
def test_a_message_it_cannot_strip_or_encode_is_declined(pipe: Pipe, message: str) -> None:
    assert call(pipe, "info", message, None, b"") == 0


def test_a_line_over_max_line_bytes_is_declined(pipe: Pipe) -> None:
    raw = b'{"blob":"' + b"x" * MAX_LINE + b'"}'
    assert call(pipe, "info", "long", None, raw) == 0
    almost = b'{"blob":"' + b"x" * (MAX_LINE - 200) + b'"}'
    assert check(pipe, "info", "almost", None, almost) == 1


def test_it_takes_a_key_exactly_when_the_record_path_copies_it_unchanged(pipe: Pipe) -> None:
    """hostd/redact.plain_keys decides for the record path; the C check must agree on every
    ASCII key: secret words in any case, split by dashes and underscores, record members."""
    rng = random.Random(16)
    words = ["token", "secret", "password", "apikey", "cookie", "authorization", "ts", "msg", "plugin", "level"]
    words += ["session", "request_id", "truncated", "tok", "pass", "api", "key", "auth"]
    taken: list[str] = []
    for _ in range(3000):
        word = rng.choice(words)
        spelt = "".join(c.upper() if rng.random() < 0.3 else c for c in word)
        spelt = (
            "".join(c + rng.choice(["", "", "", "-", "_"]) for c in spelt).rstrip("-_") if rng.random() < 0.3 else spelt
        )
        key = rng.choice(["", "", "x", "my_", " "]) + spelt + rng.choice(["", "", "s", "_id", "-2", " "])
        status = call(pipe, "info", "key", None, orjson.dumps({key: 1}))
        assert status == (1 if plain_keys({key: 1}) else 0), key
        if status == 1:
            taken.append(key)
    assert taken and [next(reversed(orjson.loads(pipe.line()))) for _ in taken] == taken


# Generated calls ----------------------------------------------------------------------------

KEYS = st.one_of(
    st.sampled_from(["n", "k", "model", "a-b", "a_b", "x.y", "Token", "pass_word", "apiKey", "cookies", "msg", "ts"]),
    st.sampled_from(["", " ", " k", "k ", "session", "truncated", "request_id", "\u00e9", "authorization"]),
    st.text(st.characters(codec="ascii", exclude_characters='"\\'), max_size=12),
)
SPELT_NUMBERS = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: orjson.dumps(f).decode()),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"-?(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?([eE][-+]?[0-9]{1,3})?", fullmatch=True),
)
SPELT_STRINGS = st.one_of(
    st.text(max_size=20).map(lambda t: orjson.dumps(t).decode()),
    st.text(max_size=20).map(json.dumps),  # non-ASCII as \\uXXXX escapes
    st.text(st.characters(codec="ascii"), max_size=10).map(lambda t: msgspec.json.encode(t).decode()),
    st.sampled_from(['"\\u00e9"', '"\\/"', '"a\\tb"', '"\\ud83d\\ude00"']),
)
VALUES = st.one_of(
    SPELT_NUMBERS,
    SPELT_STRINGS,
    st.sampled_from(["true", "false", "null", "{}", "[]", '{"a":1}', "[1,2]"]),
)
SPACE = st.sampled_from(["", "", "", " ", "\n\t "])


@st.composite
def spelt_fields(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([b"", b"null", b"{}", b" {} "]))
    members = draw(st.lists(st.tuples(KEYS, VALUES, SPACE, SPACE), max_size=6))
    parts = [f"{msgspec.json.encode(k).decode()}{s1}:{s2}{v}" for k, v, s1, s2 in members]
    return f"{draw(SPACE)}{{{draw(SPACE)}{(',' + draw(SPACE)).join(parts)}{draw(SPACE)}}}{draw(SPACE)}".encode()


@FUZZ
@given(
    level=st.sampled_from(list(LEVEL_MSG)),
    message=st.text(max_size=30),
    request_id=st.one_of(st.none(), st.just(""), st.text(max_size=12)),
    raw=spelt_fields(),
)
@example(level="info", message="m", request_id=None, raw=b'{"f":123456789012345.6}')
@example(level="info", message="m", request_id=None, raw=b'{"f":100000000000000.5,"g":99999999999999.9}')
def test_every_line_it_takes_is_the_record_paths_line(
    pipe: Pipe, level: str, message: str, request_id: str | None, raw: bytes
) -> None:
    check(pipe, level, message, request_id, raw)


@FUZZ
@given(raw=st.binary(max_size=40) | spelt_fields().map(lambda b: b[: len(b) // 2]))
def test_it_never_takes_fields_msgspec_refuses(pipe: Pipe, raw: bytes) -> None:
    try:
        msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        assert call(pipe, "info", "invalid", None, raw) == 0
    else:
        check(pipe, "info", "valid", None, raw)


# The rate limit and the queue ----------------------------------------------------------------


def test_a_call_over_the_rate_limit_is_refused_counted_and_not_written(pipe: Pipe) -> None:
    bucket = _logline.Bucket(0.0, 1.0)
    assert call(pipe, "info", "first", None, b"", bucket=bucket) == 1
    assert call(pipe, "info", "refused", None, b"", bucket=bucket) == 2
    assert bucket.dropped == 1
    assert call(pipe, "info", "marker", None, b"") == 1
    assert orjson.loads(pipe.line())["msg"] == "first"
    assert orjson.loads(pipe.line())["msg"] == "marker"  # the refused line was never queued


def test_the_bucket_takes_a_burst_then_refuses_and_warns_with_the_count() -> None:
    bucket = _logline.Bucket(0.0, 3.0)
    assert (bucket.rate_per_s, bucket.burst) == (0.0, 3.0)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.dropped == 1
    bucket.warning_interval_s = 1e9
    assert bucket.warning_due() == 1
    assert bucket.take() is False and bucket.take() is False
    assert bucket.warning_due() == 0  # within the interval: counted for later
    bucket.warning_interval_s = 0.0
    assert bucket.warning_due() == 2
    assert bucket.warning_due() == 0  # nothing new
    assert bucket.dropped == 3


def test_the_bucket_refills_at_its_rate_and_keeps_at_most_a_new_burst() -> None:
    bucket = _logline.Bucket(1e9, 1.0)
    assert bucket.take() is True
    assert any(bucket.take() for _ in range(1_000_000))  # refilled as soon as time moves
    reconfigured = _logline.Bucket(0.0, 5.0)
    reconfigured.configure(0.0, 2.0)
    assert (reconfigured.rate_per_s, reconfigured.burst) == (0.0, 2.0)
    assert [reconfigured.take() for _ in range(3)] == [True, True, False]


def test_when_the_queue_is_full_lines_are_dropped_and_later_ones_written() -> None:
    p = Pipe(max_queue_bytes=64 * 1024)  # nobody reads yet: the thread blocks on the full pipe
    try:
        filler = b'{"blob":"' + b"y" * 500 + b'"}'
        statuses = [call(p, "info", f"f{n}", None, filler) for n in range(5000)]
        writes = [p.writer.write(b'{"w":%d}\n' % n) for n in range(200)]
        assert 3 in statuses and False in writes
        assert set(statuses) <= {1, 3}
        assert p.writer.queued_bytes <= 64 * 1024
        kept = [f"f{n}" for n, s in enumerate(statuses) if s == 1] + [f"w{n}" for n, ok in enumerate(writes) if ok]
        read = []
        for _ in kept:
            line = orjson.loads(p.line())
            read.append(line["msg"] if "msg" in line else f"w{line['w']}")
        assert read == kept  # what was queued, in order; what was dropped, never
        assert call(p, "info", "after", None, b"") == 1  # the queue has room again
        assert orjson.loads(p.line())["msg"] == "after"
    finally:
        p.close()


def test_a_full_queue_in_lines_drops_the_lines_past_the_bound() -> None:
    p = Pipe(max_lines=3)
    try:
        statuses = [call(p, "info", f"n{n}", None, b"") for n in range(50_000)]
        assert 3 in statuses
        kept = [n for n, s in enumerate(statuses) if s == 1]
        assert [orjson.loads(p.line())["msg"] for _ in kept] == [f"n{n}" for n in kept]
    finally:
        p.close()


def test_lines_of_both_kinds_arrive_once_and_in_order() -> None:
    p = Pipe()
    received = bytearray()

    def read() -> None:
        while chunk := os.read(p.read_fd, 1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    count = 60_000
    for n in range(count):
        if n % 2:
            assert p.writer.write(b'{"n":%d}\n' % n)
        else:
            assert call(p, "info", "m", None, b'{"n":%d}' % n) == 1
    p.writer.flush(30)
    os.close(p.write_fd)
    reader.join(30)
    os.close(p.read_fd)
    assert [orjson.loads(line)["n"] for line in bytes(received).splitlines()] == list(range(count))


def test_a_writer_dropped_with_lines_queued_and_its_thread_blocked_ends_cleanly() -> None:
    """Each dropped writer's thread ends once its write fails (under test_c_asan, a use of the
    freed queue would be reported)."""
    threads = len(os.listdir("/proc/self/task"))
    for _ in range(20):
        p = Pipe()
        for _ in range(2000):  # more than the pipe holds: the thread blocks in write(2)
            p.writer.write(b"z" * 200 + b"\n")
        del p.writer  # the thread is told to stop; it lets go of the queue when write(2) returns
        os.close(p.read_fd)  # its write fails (EPIPE): it ends
        os.close(p.write_fd)
    deadline = time.monotonic() + T
    while len(os.listdir("/proc/self/task")) > threads:  # no sleep: polled until they are gone
        assert time.monotonic() < deadline, "a dropped writer's thread did not end"


def test_wrong_arguments_are_a_type_error(pipe: Pipe) -> None:
    with pytest.raises(TypeError):
        pipe.writer.plugin_line(object(), LEVEL_MSG["info"], "m", MEMBERS, None, b"", MAX_LINE)
    with pytest.raises(TypeError):
        pipe.writer.plugin_line(unlimited(), "not bytes", "m", MEMBERS, None, b"", MAX_LINE)
    with pytest.raises(TypeError):
        pipe.writer.plugin_line(unlimited(), LEVEL_MSG["info"], "m", MEMBERS, None, b"")
    assert call(pipe, "info", "after", None, b"") == 1
    assert orjson.loads(pipe.line())["msg"] == "after"
