"""Hostile input, generated (PROTOCOL §1, §2, §4): a real hostd over a real Unix socket and
over its stdio pipes, on the event loop ``--loop`` picks, fed what a hostile plugin would send.

Properties checked after every example:
- every request line gets exactly one well-formed answer (a JSON-RPC object, or an array of
  them for a batch); notifications and answer-shaped messages get none. "None" is proven by a
  sentinel request sent after the example: its answer is the last thing the example produces;
- no answer is ever ``-32603`` (an internal error is a bug in hostd, never bad input);
- the daemon stays up, and a neighbour session on the same daemon answers at once.

One daemon per transport for the whole module. ``HOSTD_FUZZ_EXAMPLES`` sets the number of
examples of the whole file (default: a bounded CI profile, derandomized so a failure
reproduces); ``make fuzz`` runs 20,000 per event loop and prints the counts per property.
Network targets are loopback only: URLs are this module's upstream's, or strings that are
not URLs at all.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import re
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.support.fake_proxy import FakeProxy
from tests.support.fuzz import fuzz_settings
from tests.support.hostd_proc import HostdProcess, start_hostd
from tests.support.raw import RawConn
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio

# The file's examples: split evenly over its 7 properties and 2 transports.
FUZZ = fuzz_settings(4200, 7 * 2)

MAX_BATCH = 1024
LEGAL_DEPTH = 150  # decoded as usual
ILLEGAL_DEPTH = 3000  # beyond every decoder's limit: -32700 wherever it sits
ANSWER_TIMEOUT = 20.0

COUNTS: Counter[str] = Counter()
STALE = re.compile(r"^x[0-9]+(-|$)")

# Every params field of every method, from the params structs in hostd/handlers/*.py.
HTTP_FIELDS = ["method", "url", "headers", "body", "request", "wire_profile", "host_callback_id", "operation_id"]
MODEL_FIELDS = [
    "entry_protocol",
    "exit_protocol",
    "model",
    "stream",
    "body",
    "headers",
    "query",
    "alt",
    "host_callback_id",
    "forced_provider",
    "auth_id",
    "proxy_url",
    "path",
]
FIELDS: dict[str, list[str]] = {
    "host.affinity.lookup": ["provider", "model", "session_id"],
    "host.auth.get": ["auth_index", "host_callback_id"],
    "host.auth.get_runtime": ["auth_index", "host_callback_id"],
    "host.auth.list": ["host_callback_id"],
    "host.auth.save": ["name", "json", "host_callback_id"],
    "host.http.cancel": ["operation_id", "host_callback_id"],
    "host.http.do": HTTP_FIELDS,
    "host.http.do_stream": HTTP_FIELDS,
    "host.http.operation_open": ["host_callback_id"],
    "host.http.stream_close": ["stream_id", "host_callback_id"],
    "host.http.stream_read": ["stream_id", "host_callback_id"],
    "host.log": ["level", "message", "fields", "host_callback_id"],
    "host.model.execute": MODEL_FIELDS,
    "host.model.execute_stream": MODEL_FIELDS,
    "host.model.stream_close": ["stream_id", "host_callback_id"],
    "host.model.stream_read": ["stream_id", "host_callback_id"],
    "host.stream.close": ["stream_id", "error", "host_callback_id"],
    "host.stream.emit": ["stream_id", "payload", "error", "host_callback_id"],
    "hostd.hello": ["plugin_id", "schema_version"],
    "$/cancelRequest": ["id"],
}
NESTED_FIELDS = {
    "request": ["method", "url", "headers", "body", "wire_profile"],
    "wire_profile": ["http1_only", "disable_auto_compression", "header_profile"],
}
URL_FIELDS = {"url", "proxy_url"}
# Methods whose calls may wait on the network: they can answer after the sentinel.
METHODS: list[str] = sorted(FIELDS)


# Lines as bytes: values that JSON encoders refuse (1e400, deep nesting) are raw text -------


@dataclass(frozen=True)
class RawJson:
    """JSON text spliced into a line as is."""

    text: bytes


def enc(value: Any) -> bytes:
    if isinstance(value, RawJson):
        return value.text
    if isinstance(value, dict):
        return b"{" + b",".join(orjson.dumps(str(k)) + b":" + enc(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(enc(v) for v in value) + b"]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()  # orjson refuses integers beyond 64 bits
    return orjson.dumps(value)


# The model: how many answer lines one line gets, from the line alone -------------------


class Ambiguous(Exception):
    """Nesting between the legal and the illegal depth: the limit is the decoder's own."""


def max_depth(line: bytes) -> int:
    depth = best = 0
    in_string = escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            best = max(best, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return best


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _parse_int(text: str) -> int | float:
    return int(text) if len(text) < 4000 else math.inf


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def decoded(line: bytes, lenient: bool = False) -> tuple[bool, Any]:
    """(is blank, the JSON value) of one framed line; ``ValueError`` when it is not JSON
    (``UnicodeError`` when it would be, but for invalid UTF-8 or a lone surrogate: with
    ``lenient`` those are read as U+FFFD instead)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if line[:1] != b"{":
        line = line.strip()
        if not line:
            return True, None
    depth = max_depth(line)
    if depth >= ILLEGAL_DEPTH:
        raise ValueError("nesting too deep")
    if depth > 2 * LEGAL_DEPTH:
        raise Ambiguous(depth)
    text = line.decode("utf-8", "replace" if lenient else "strict")
    value = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    if not lenient and _has_lone_surrogate(value):
        raise UnicodeError("lone surrogate")
    return False, value


def answers_for(message: Any) -> int:
    """0 or 1: does this one message (not a batch) get an answer."""
    if not isinstance(message, dict):
        return 1
    if "method" not in message:
        return 0 if ("result" in message or "error" in message) else 1
    if message.get("jsonrpc") != "2.0" or not isinstance(message["method"], str):
        return 1
    return 1 if "id" in message else 0


def must_answer_id(message: Any) -> str | None:
    """The id an answer must carry: a valid request's string id."""
    if not isinstance(message, dict) or not answers_for(message) or message.get("jsonrpc") != "2.0":
        return None
    return message["id"] if isinstance(message.get("method"), str) and isinstance(message.get("id"), str) else None


@dataclass
class Expect:
    min_lines: int  # answer lines
    max_lines: int
    batch_sizes: list[int] | None  # the length of each batch answer (None: not known)
    parse_errors: int  # lines that must be answered -32700
    ids: set[str] = field(default_factory=set)  # ids that must be answered


def expect(line: bytes) -> Expect:
    """What one line must get. Exact, except for invalid UTF-8 (or a lone surrogate) inside a
    well-formed message: hostd may find it while decoding the envelope (-32700) or only when
    it decodes the params (-32602, and then nothing for a notification)."""
    try:
        blank, value = decoded(line)
    except UnicodeError:
        try:
            _, value = decoded(line, lenient=True)
        except (ValueError, RecursionError):
            return Expect(1, 1, [], 1)
        messages = value if isinstance(value, list) and value else [value]
        needs = any(answers_for(m) for m in messages) if isinstance(value, list) else answers_for(value)
        return Expect(int(needs), 1, None, 0)
    except (ValueError, RecursionError):
        return Expect(1, 1, [], 1)
    if blank:
        return Expect(0, 0, [], 0)
    if isinstance(value, list):
        if not value or len(value) > MAX_BATCH:
            return Expect(1, 1, [], 0)
        n = sum(answers_for(m) for m in value)
        ids = {i for m in value if (i := must_answer_id(m))}
        return Expect(1, 1, [n], 0, ids) if n else Expect(0, 0, [], 0)
    n = answers_for(value)
    rid = must_answer_id(value)
    return Expect(n, n, [], 0, {rid} if rid else set())


def well_formed(answer: Any) -> None:
    assert isinstance(answer, dict), answer
    assert answer.get("jsonrpc") == "2.0", answer
    assert "id" in answer and (answer["id"] is None or isinstance(answer["id"], int | float | str)), answer
    assert ("result" in answer) != ("error" in answer), answer
    if "error" in answer:
        error = answer["error"]
        assert isinstance(error, dict) and isinstance(error.get("code"), int), answer
        assert isinstance(error.get("message"), str) and error["message"], answer
        assert error["code"] != -32603, f"internal error for hostile input: {answer}"
        if "data" in error:
            assert isinstance(error["data"], dict) and isinstance(error["data"].get("code"), str), answer


# The daemon, its upstreams and the sessions ------------------------------------------


@dataclass
class Target:
    hp: HostdProcess
    conn: RawConn  # the session under attack
    neighbour: RawConn
    transport: str
    upstream: Upstream
    proxy: FakeProxy
    examples: int = 0

    async def neighbour_ok(self) -> None:
        """The daemon is up and a second session answers at once."""
        assert self.hp.proc.returncode is None, "hostd exited"
        rid = f"n{self.examples}"
        if self.transport == "socket":
            answer = await self.neighbour.call("hostd.hello", {}, rid=rid)
            assert answer["result"]["server"] == "hostd", answer
        else:  # a stdio daemon's other session is its control socket
            answer = await self.neighbour.call("hostd.status", {}, rid=rid)
            assert len(answer["result"]["sessions"]) == 1, answer

    async def resync(self) -> None:
        """After a failed example: read until a fresh sentinel's answer, so the next example
        does not see this one's leftovers."""
        self.examples += 1
        mark = f"resync-{self.examples}"
        self.examples += 1
        with contextlib.suppress(Exception):
            await self.conn.send_json({"jsonrpc": "2.0", "id": mark, "method": "hostd.hello"})
            while True:
                answer = await self.conn.line(ANSWER_TIMEOUT)
                if isinstance(answer, dict) and answer.get("id") == mark:
                    return

    async def sentinel(self, prefix: str, lines: list[bytes]) -> list[Any]:
        """Send ``lines`` then a sentinel; read until the sentinel and every expected answer
        have come. Checks counts, shapes and ids; returns the answers."""
        expected = [expect(line) for line in lines]
        low = sum(e.min_lines for e in expected)
        high = sum(e.max_lines for e in expected)
        required = set().union(*(e.ids for e in expected))
        sentinel = f"{prefix}-sentinel"
        payload = b"".join(line + b"\n" for line in lines)
        payload += b'{"jsonrpc":"2.0","id":"' + sentinel.encode() + b'","method":"hostd.hello"}\n'
        await self.conn.send(payload)
        got: list[Any] = []
        answered: list[Any] = []
        seen_sentinel = False
        # Answers that can vary in number are decided while decoding, before the sentinel's
        # answer is written; the ids of valid requests tell when the slow ones are all in.
        while not (seen_sentinel and len(got) >= low and required <= set(answered)):
            answer = await self.conn.line(ANSWER_TIMEOUT)
            if isinstance(answer, dict) and answer.get("id") == sentinel:
                assert not seen_sentinel
                seen_sentinel = True
                well_formed(answer)
                continue
            got.append(answer)
            assert len(got) <= high, f"more answers than requests: {got}"
            for one in answer if isinstance(answer, list) else [answer]:
                well_formed(one)
                answered.append(one["id"])
        sizes = [n for e in expected if e.batch_sizes is not None for n in e.batch_sizes]
        if all(e.batch_sizes is not None for e in expected):
            assert sorted(len(a) for a in got if isinstance(a, list)) == sorted(sizes), got
        mine = [i for i in answered if isinstance(i, str) and i.startswith(prefix)]
        assert len(mine) == len(set(mine)), f"an id answered twice: {got}"
        stale = [i for i in answered if isinstance(i, str) and STALE.match(i) and i.split("-")[0] != prefix]
        assert not stale, f"answers from an earlier example: {stale}"
        # Lines that are not JSON are -32700 with id null, even when a typed decoder would
        # refuse a member before it reaches the syntax error (or the depth).
        unreadable = sum(e.parse_errors for e in expected)
        parse = sum(1 for a in got if isinstance(a, dict) and a["id"] is None and a["error"]["code"] == -32700)
        assert parse >= unreadable, (lines, got)
        return got


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def counts(request: pytest.FixtureRequest) -> Iterator[Counter[str]]:
    COUNTS.clear()
    yield COUNTS
    loop = request.config.getoption("--loop")
    for name, n in sorted(COUNTS.items()):
        print(f"\nfuzz [{loop}] {name}: {n} examples")
    print(f"\nfuzz [{loop}] total: {sum(COUNTS.values())} examples")


@pytest.fixture(scope="module", params=["socket", "stdio"])
async def target(request: pytest.FixtureRequest, counts: Counter[str]) -> AsyncIterator[Target]:
    transport = str(request.param)
    upstream = await Upstream().start()
    proxy = await FakeProxy().start()
    release = asyncio.Event()
    upstream.hold("/hold", [b"first"], release, [b"last"])
    upstream.hold("/chunks", [b"a" * 100, b"b" * 40000, b"c"])

    @upstream.route("/ok")
    async def ok(_: Request) -> Response:
        return Response(200, [("Content-Type", "text/plain")], b"ok")

    with tempfile.TemporaryDirectory(prefix="hostd-fz-", dir="/tmp") as tmp:
        auth = Path(tmp) / "auth"
        auth.mkdir()
        hp = await start_hostd(
            Path(tmp),
            "--auth-dir",
            str(auth),
            "--model-base-url",
            proxy.url,
            stdio=transport == "stdio",
            control=True,
        )
        try:
            assert hp.control is not None
            if transport == "socket":
                assert hp.socket is not None
                conn = await RawConn.open(hp.socket)
                neighbour = await RawConn.open(hp.socket)
            else:
                assert hp.proc.stdout is not None and hp.proc.stdin is not None
                conn = RawConn(hp.proc.stdout, hp.proc.stdin)
                neighbour = await RawConn.open(hp.control)
            hello = await conn.call("hostd.hello", {}, rid="first")
            assert sorted(hello["result"]["methods"]) == sorted(m for m in FIELDS if m != "$/cancelRequest"), (
                "a method without a fuzz entry: add its params fields to FIELDS"
            )
            t = Target(hp, conn, neighbour, transport, upstream, proxy)
            yield t
            # Nothing left over from any example: the next line is this sentinel's answer.
            assert (await conn.call("hostd.hello", {}, rid="last"))["id"] == "last"
            await t.neighbour_ok()
            await neighbour.close()
            await conn.close()
            if transport == "stdio":  # a stdio daemon exits when its session ends
                async with asyncio.timeout(15):
                    await hp.proc.wait()
        finally:
            release.set()
            code = await hp.stop()
            await upstream.stop()
            await proxy.stop()
        assert code == 0, "\n".join(hp.stderr_lines[-30:])


# Strategies ------------------------------------------------------------------------------

HUGE_NUMBERS = st.sampled_from(
    [
        b"1e400",
        b"-1e400",
        b"1e-400",
        b"123e99999",
        b"18446744073709551616",
        b"-9223372036854775809",
        b"1" * 400,
        b"-" + b"9" * 1000,
        b"0." + b"0" * 500 + b"1",
        b"1.7976931348623157e309",
        b"4.9e-325",
    ]
).map(RawJson) | st.integers(min_value=-(2**200), max_value=2**200).filter(lambda n: abs(n) >= 2**63)


# Ids hostd refuses -32600 (id null): beyond float64, or integers beyond 64 bits.
OUT_OF_RANGE = [
    b"1e400",
    b"-1e400",
    b"123e99999",
    b"1.7976931348623157e309",
    b"123456789012345678901234567890",
    b"18446744073709551616",
    b"-9223372036854775809",
]


def deep(depth: int, kind: str) -> RawJson:
    if kind == "array":
        return RawJson(b"[" * depth + b"]" * depth)
    if kind == "object":
        return RawJson(b'{"a":' * depth + b"1" + b"}" * depth)
    return RawJson(b'[{"k":' * (depth // 2) + b"null" + b"}]" * (depth // 2))


DEPTHS = st.integers(1, LEGAL_DEPTH) | st.integers(ILLEGAL_DEPTH, 2 * ILLEGAL_DEPTH)
DEEP = st.builds(deep, DEPTHS, st.sampled_from(["array", "object", "mixed"]))

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON = st.recursive(
    SCALARS | HUGE_NUMBERS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


# Placeholders, replaced when an example is sent: the upstream's address (known only once it
# listens) and the example's id prefix (ids are unique per example, so a late answer shows).
UPSTREAM = "http://upstream.invalid"
PREFIX = "@PFX@"

SAFE_URLS = st.sampled_from(
    [
        UPSTREAM + "/ok",
        UPSTREAM + "/chunks",
        UPSTREAM + "/missing?q=1",
        "",
        "not a url",
        "http://",
        "http:///ok",
        "ftp://127.0.0.1:1/",
        "http://127.0.0.1:0/",
        "http://[::1",
        "http://127.0.0.1:99999/",
        "http://user:pw@127.0.0.1:1/",
    ]
) | st.text(max_size=20).filter(lambda s: not any(c in s for c in ":/\\.@"))


def _field_value_of(name: str) -> Callable[[], st.SearchStrategy[Any]]:
    return lambda: field_value(name)


def field_value(name: str) -> st.SearchStrategy[Any]:
    """A value for one params field: of the wrong type mostly, sometimes the right one.
    URL fields only ever hold loopback URLs or strings that are no URL at all."""
    not_a_string = JSON.filter(lambda v: not isinstance(v, str))
    if name in URL_FIELDS:
        return SAFE_URLS | not_a_string
    if name in NESTED_FIELDS:
        inner = st.fixed_dictionaries({}, optional={k: st.deferred(_field_value_of(k)) for k in NESTED_FIELDS[name]})
        return inner | not_a_string
    if name in ("headers", "query"):
        good = st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=8) | st.none(), max_size=3) | st.none())
        return good | not_a_string
    if name in ("body", "payload"):
        return st.sampled_from(["", "aGk=", "aGk", "!!!", "aG\nk=", "a" * 4]) | JSON
    if name == "json":
        return st.dictionaries(st.text(max_size=8), JSON, max_size=4) | JSON
    if name == "name":
        return st.sampled_from(["a.json", "b.JSON", "../x.json", "x", "c:\\d.json", " e.json "]) | JSON
    if name == "entry_protocol":
        return st.sampled_from(["openai", "claude", "gemini", "openai-response", "x"]) | JSON
    if name == "stream":
        return st.booleans() | JSON
    return JSON


def params_for(method: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = FIELDS[method]
    known = st.fixed_dictionaries({}, optional={f: field_value(f) for f in fields})
    # Unknown keys: never one that folds onto a field (a "URL" key is the url field, §3).
    unknown = st.dictionaries(
        st.text(max_size=6).filter(lambda k: k.casefold() not in {f.casefold() for f in fields}), JSON, max_size=2
    )
    return st.builds(lambda a, b: {**b, **a}, known, unknown)


@st.composite
def requests(draw: st.DrawFn, with_id: bool | None = None) -> dict[str, Any]:
    """A request (or a notification) to any method, with params of any shape."""
    method = draw(st.sampled_from(METHODS))
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    params = draw(params_for(method) | JSON.filter(lambda v: not isinstance(v, str) or "://" not in v))
    if not (isinstance(params, dict) and not params and draw(st.booleans())):
        message["params"] = params
    if with_id if with_id is not None else draw(st.booleans()):
        message["id"] = PREFIX
    return message


def fill_ids(messages: list[Any]) -> list[Any]:
    """Every request that has an id gets a unique one under the example's prefix."""
    for i, m in enumerate(messages):
        if isinstance(m, dict) and "id" in m and "method" in m:
            m["id"] = f"{PREFIX}-{i}"
        elif isinstance(m, list):
            for j, e in enumerate(m):
                if isinstance(e, dict) and "id" in e and "method" in e:
                    e["id"] = f"{PREFIX}-{i}.{j}"
    return messages


def unambiguous(lines: list[bytes]) -> bool:
    try:
        for line in lines:
            expect(line)
    except Ambiguous:
        return False
    return True


async def run_example(target: Target, name: str, lines: list[bytes]) -> list[Any]:
    """Send one example's lines under the current prefix, check them, move to the next prefix."""
    prefix = prefix_of(target)
    sub = [
        line.replace(UPSTREAM.encode(), target.upstream.url.encode()).replace(PREFIX.encode(), prefix.encode())
        for line in lines
    ]
    try:
        got = await target.sentinel(prefix, sub)
        await target.neighbour_ok()
    except BaseException:
        await target.resync()  # the next example (while shrinking) starts from a clean line
        raise
    target.examples += 1
    COUNTS[f"{name}[{target.transport}]"] += 1
    return got


def prefix_of(target: Target) -> str:
    return f"x{target.examples}"


# The properties ----------------------------------------------------------------------------


def corrupt(line: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(line)
    for kind, at, data in edits:
        if not out:
            out.extend(data)
            continue
        at %= len(out)
        if kind == 0:
            out[at : at + 1] = data
        elif kind == 1:
            out[at:at] = data
        else:
            del out[at : at + len(data) + 1]
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.binary(max_size=3)), max_size=4)


@st.composite
def byte_lines(draw: st.DrawFn) -> list[bytes]:
    chunks: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["bytes", "text", "corrupt"]))
        if kind == "bytes":
            chunks.append(draw(st.binary(max_size=300)))
        elif kind == "text":
            chunks.append(draw(st.text(max_size=200)).encode("utf-8", "surrogatepass"))
        else:
            message = draw(requests())
            if "id" in message:
                message["id"] = f"{PREFIX}-r{len(chunks)}"
            chunks.append(corrupt(enc(message), draw(EDITS)))
    lines = b"\n".join(chunks).split(b"\n")
    assume(unambiguous(lines))
    return lines


@FUZZ
@given(lines=byte_lines())
async def test_arbitrary_bytes_lines(target: Target, lines: list[bytes]) -> None:
    await run_example(target, "arbitrary bytes", lines)


INVALID_UTF8 = st.sampled_from(
    [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\x80", b"\xf4\x90\x80\x80"]
)


@st.composite
def invalid_utf8_lines(draw: st.DrawFn) -> bytes:
    line = enc(draw(requests()))
    # Inside a string (after an opening quote), or anywhere at all.
    quotes = [i + 1 for i, b in enumerate(line) if b == 0x22] or [0]
    at = draw(st.sampled_from(quotes) | st.integers(0, len(line)))
    return line[:at] + draw(INVALID_UTF8) + line[at:]


@FUZZ
@given(line=invalid_utf8_lines())
async def test_invalid_utf8_anywhere(target: Target, line: bytes) -> None:
    # Refused as unreadable (-32700), as params that do not decode (-32602), or ignored
    # inside an unknown key: each request answered once, whichever hostd finds.
    await run_example(target, "invalid UTF-8", [line])


def nest_at(message: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    cursor: Any = message
    for key in path[:-1]:
        if not isinstance(cursor.get(key), dict):
            cursor[key] = {}
        cursor = cursor[key]
    cursor[path[-1]] = value
    return message


INSIDE = [
    ["fields", "k"],
    ["headers", "X-A"],
    ["body"],
    ["request", "headers", "X-B"],
    ["request", "wire_profile", "header_profile"],
    ["json", "nested"],
    ["query", "q"],
]


@st.composite
def deep_positions(draw: st.DrawFn) -> tuple[bytes, bool, bool]:
    """A line with one deep value somewhere; (line, beyond the decoders' limit, the value is
    an envelope member)."""
    value = draw(DEEP)
    illegal = max_depth(value.text) >= ILLEGAL_DEPTH
    where = draw(st.sampled_from(["line", "batch", "envelope", "params", "field", "inside"]))
    if where == "line":
        return value.text, illegal, False
    message = draw(requests())
    method = message["method"]
    if where == "batch":
        other = draw(requests(with_id=True))
        message["id"] = other["id"] = None  # ids are set below
        items = fill_ids([[message, RawJson(b"0"), other]])[0]
        items[1] = value
        return enc(items), illegal, False
    if where == "envelope":
        message[draw(st.sampled_from(["id", "params", "result", "jsonrpc", "method", "x"]))] = value
    elif where == "params":
        message["params"] = {**(message["params"] if isinstance(message.get("params"), dict) else {}), "zz": value}
    elif where == "field":
        message["params"] = nest_at({}, [draw(st.sampled_from(FIELDS[method]))], value)
    else:
        params = message["params"] if isinstance(message.get("params"), dict) else {}
        message["params"] = nest_at(dict(params), draw(st.sampled_from(INSIDE)), value)
    return enc(message), illegal, where == "envelope"


@FUZZ
@given(case=deep_positions())
async def test_deep_nesting_at_every_position(target: Target, case: tuple[bytes, bool, bool]) -> None:
    line, illegal, envelope = case
    got = await run_example(target, "deep nesting", [line])
    if illegal:
        # Wherever it sits, the envelope included: -32700 with id null (§4).
        assert len(got) == 1 and got[0]["error"]["code"] == -32700 and got[0]["id"] is None, (envelope, got)
    else:
        assert all(not isinstance(a, dict) or a.get("error", {}).get("code") != -32700 for a in got), got


@st.composite
def huge_number_lines(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    method = draw(st.sampled_from(METHODS))
    names = draw(st.lists(st.sampled_from([*FIELDS[method], "zz"]), min_size=1, max_size=3, unique=True))
    params: dict[str, Any] = {}
    for name in names:
        number = draw(HUGE_NUMBERS)
        params[name] = draw(st.sampled_from([number, [number], {"k": number}, {"k": [number]}]))
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    has_id = draw(st.booleans())
    if has_id:
        message["id"] = PREFIX
    lines = [enc(message)]
    if draw(st.booleans()):  # an id beyond float64: one -32600, never silence
        bad_id = RawJson(draw(st.sampled_from(OUT_OF_RANGE)))
        lines.append(enc({"jsonrpc": "2.0", "id": bad_id, "method": "hostd.hello"}))
    return lines, has_id


@FUZZ
@given(case=huge_number_lines())
async def test_huge_numbers_in_every_field(target: Target, case: tuple[list[bytes], bool]) -> None:
    lines, has_id = case
    got = await run_example(target, "huge numbers", lines)
    if has_id:
        assert any(isinstance(a, dict) and isinstance(a["id"], str) for a in got), got
    for answer in got:  # an id out of range is refused, never echoed altered
        assert isinstance(answer, dict) and (isinstance(answer["id"], str) or answer["error"]["code"] == -32600), got


@st.composite
def wrong_type_messages(draw: st.DrawFn) -> list[Any]:
    batch = draw(st.booleans())
    messages: list[Any] = [draw(requests()) for _ in range(draw(st.integers(1, 4)))]
    if batch:
        messages = [messages]
    return fill_ids(messages)


@FUZZ
@given(messages=wrong_type_messages())
async def test_wrong_types_in_every_params_field_of_every_method(target: Target, messages: list[Any]) -> None:
    got = await run_example(target, "wrong types", [enc(m) for m in messages])
    for answer in got:
        for one in answer if isinstance(answer, list) else [answer]:
            if "error" in one and one["error"]["code"] == -32602:
                message = one["error"]["message"]
                assert message.startswith(("decode ", "params must be an object", "invalid plugin id")), one


# Ids of any type, ill-typed ones included: an answer is never answered, whatever its id.
ANSWER_IDS = (
    st.sampled_from(["hostd-1", "hostd-999999", "x", ""])
    | st.integers(-5, 2**40)
    | st.none()
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    | HUGE_NUMBERS
)


@st.composite
def answer_shaped(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {}
    if draw(st.booleans()):
        message["jsonrpc"] = draw(st.sampled_from(["2.0", "1.0", ""]) | JSON)
    if draw(st.booleans()):
        message["id"] = draw(ANSWER_IDS)
    if draw(st.booleans()):
        message["result"] = draw(JSON)
    else:
        message["error"] = draw(
            st.fixed_dictionaries({}, optional={"code": JSON, "message": JSON, "data": JSON}) | JSON
        )
    return message


@st.composite
def answer_shaped_lines(draw: st.DrawFn) -> list[Any]:
    items: list[Any] = draw(st.lists(answer_shaped(), min_size=1, max_size=5))
    if draw(st.booleans()):
        items.append(draw(st.lists(answer_shaped(), min_size=1, max_size=3)))
    if draw(st.booleans()):  # among requests
        items.insert(draw(st.integers(0, len(items))), {"jsonrpc": "2.0", "id": 1, "method": "host.log"})
    return fill_ids(items)


@FUZZ
@given(items=answer_shaped_lines())
async def test_answer_shaped_messages_are_never_answered(target: Target, items: list[Any]) -> None:
    got = await run_example(target, "answer-shaped", [enc(m) for m in items])
    assert len(got) == sum(1 for m in items if isinstance(m, dict) and "method" in m), got


# Interleavings of stream open/read/close/cancel and batches --------------------------------


@dataclass
class Op:
    kind: str  # open, read, close, cancel, batch, unknown
    stream: int = 0
    target: int = 0
    source: str = "hold"


OPS = st.lists(
    st.builds(
        Op,
        st.sampled_from(["open", "read", "read", "close", "cancel", "batch", "unknown"]),
        st.integers(0, 5),
        st.integers(0, 20),
        st.sampled_from(["hold", "chunks", "model", "model"]),
    ),
    min_size=1,
    max_size=14,
)
MODEL_BODY = base64.b64encode(orjson.dumps({"model": "m", "stream": True})).decode()


@FUZZ
@given(ops=OPS)
async def test_interleaved_open_read_close_cancel_and_batches(target: Target, ops: list[Op]) -> None:
    prefix = prefix_of(target)
    conn = target.conn
    streams: list[tuple[str, str]] = []  # (family, stream id)
    sent: list[str] = []  # ids of the requests sent
    batches = 0
    early: list[Any] = []  # answers that came while waiting for an open
    n = 0

    def rid() -> str:
        nonlocal n
        n += 1
        return f"{prefix}-{n}"

    def read_or_close(op: Op, verb: str) -> dict[str, Any]:
        family, sid = streams[op.stream % len(streams)] if streams else ("http", "nope")
        return {"jsonrpc": "2.0", "id": rid(), "method": f"host.{family}.stream_{verb}", "params": {"stream_id": sid}}

    for op in ops:
        if op.kind == "open":
            i = rid()
            if op.source == "model":
                params: dict[str, Any] = {"entry_protocol": "openai", "model": "m", "stream": True, "body": MODEL_BODY}
                method, family = "host.model.execute_stream", "model"
            else:
                params = {"url": f"{target.upstream.url}/{op.source}"}
                method, family = "host.http.do_stream", "http"
            await conn.send_json({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
            while True:  # the open's answer: other answers may come first
                answer = await conn.line(ANSWER_TIMEOUT)
                if isinstance(answer, dict) and answer.get("id") == i:
                    break
                early.append(answer)
            well_formed(answer)
            assert "result" in answer, answer
            streams.append((family, answer["result"]["stream_id"]))
        elif op.kind in ("read", "close"):
            message = read_or_close(op, op.kind)
            sent.append(message["id"])
            await conn.send_json(message)
        elif op.kind == "cancel" and sent:
            victim = sent[op.target % len(sent)]
            await conn.send_json({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": victim}})
        elif op.kind == "batch":
            batch = [
                read_or_close(op, "read"),
                {"jsonrpc": "2.0", "method": "host.log", "params": {}},
                {"jsonrpc": "2.0", "id": rid(), "method": "hostd.hello"},
            ]
            sent.extend(m["id"] for m in batch if "id" in m)
            batches += 1
            await conn.send_json(batch)
        elif op.kind == "unknown":
            message = read_or_close(op, "read")
            message["params"] = {"stream_id": f"{prefix}-unknown"}
            sent.append(message["id"])
            await conn.send_json(message)
    # The example closes what it opened: every read still waiting is answered then.
    closes: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": rid(), "method": f"host.{family}.stream_close", "params": {"stream_id": sid}}
        for family, sid in streams
    ]
    sent.extend(c["id"] for c in closes)
    want_lines = len(sent) - batches  # a batch's two answers are one line
    sentinel = f"{prefix}-sentinel"
    sentinel_line = orjson.dumps({"jsonrpc": "2.0", "id": sentinel, "method": "hostd.hello"}) + b"\n"
    await conn.send(b"".join(orjson.dumps(c) + b"\n" for c in closes) + sentinel_line)
    got = list(early)
    seen = False
    while not (seen and len(got) == want_lines):
        answer = await conn.line(ANSWER_TIMEOUT)
        if isinstance(answer, dict) and answer.get("id") == sentinel:
            seen = True
            continue
        got.append(answer)
        assert len(got) <= want_lines, f"more answers than requests: {got}"
    answered = []
    for answer in got:
        for one in answer if isinstance(answer, list) else [answer]:
            well_formed(one)
            answered.append(one["id"])
    assert sorted(answered) == sorted(sent), (ops, got)
    await target.neighbour_ok()
    target.examples += 1
    COUNTS[f"interleavings[{target.transport}]"] += 1
