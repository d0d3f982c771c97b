"""Long lines are answered exactly as the usual two-pass decode answers them: read off the
loop by the scanner (``hostd.rpc.scan``, the C pass built with the package) and, in a hostd
without it, decoded in one pass (``hostd.rpc.messages.decode_long``).

Each case is sent twice on a real hostd: short (an empty string pad, a ``0`` value pad: the
usual path) and long (a 100 KiB string, or a ~120 KiB value nested 200 deep, placed *after*
whatever the case tests, so error positions are the same in both); the answers must be equal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from hostd.handlers.log import LogParams
from hostd.rpc import scan
from hostd.rpc.messages import LONG_LINE, UNSET, decode_long
from hostd.rpc.params import ParamsDecoder
from tests.support.hostd_proc import HostdProcess, hostd_without, start_hostd
from tests.support.raw import RawConn

pytestmark = pytest.mark.anyio

PAD = b"x" * (LONG_LINE + 36 * 1024)
NESTED = b"[" * 200 + b"1" + b"]" * 200
DEEP = b"[" + b",".join([NESTED] * 300) + b"]"  # a value, ~120 KiB, 201 deep

LOG = b'"method":"host.log"'
PADDED = b'"fields":{"pad":"@"}'  # the pad, last in params


def _line(rid: bytes, params: bytes, method: bytes = LOG, jsonrpc: bytes = b'"2.0"') -> bytes:
    return b'{"jsonrpc":' + jsonrpc + b',"id":' + rid + b"," + method + b',"params":{' + params + b"}}"


CASES: dict[str, bytes] = {
    "valid host.log": _line(b"1", b'"level":"debug","message":"m",' + PADDED),
    "params before method": b'{"jsonrpc":"2.0","id":2,"params":{"level":"debug",' + PADDED + b"}," + LOG + b"}",
    "Go-cased keys": _line(b"3", b'"Level":"debug","Message":"m","Fields":{"pad":"@"}'),
    "a nested method names another": (
        b'{"jsonrpc":"2.0","id":4,"params":{"message":"m","fields":{"method":"host.log","pad":"@"}},'
        b'"method":"hostd.hello"}'
    ),
    "unknown method": _line(b"5", b'"pad":"@"', method=b'"method":"host.nope"'),
    "wrong type before the pad": _line(b"6", b'"level":5,' + PADDED),
    "invalid UTF-8 before the pad": _line(b"7", b'"message":"\xff",' + PADDED),
    "bad escape before the pad": _line(b"8", b'"message":"\\q",' + PADDED),
    "syntax error before the pad": _line(b"9", b'"message":"m",,' + PADDED),
    "nesting too deep before the pad": _line(b"10", b'"fields":{"d":' + b"[" * 3000 + b"]" * 3000 + b',"pad":"@"}'),
    "params null": b'{"jsonrpc":"2.0","id":11,' + LOG + b',"params":null,"pad":"@"}',
    "params absent": b'{"jsonrpc":"2.0","id":12,' + LOG + b',"pad":"@"}',
    "wrong jsonrpc": _line(b"13", PADDED, jsonrpc=b'"1.0"'),
    "id of the wrong type": _line(b"true", PADDED),
    "notification": b'{"jsonrpc":"2.0",' + LOG + b',"params":{"level":"debug",' + PADDED + b"}}",
    # What the scanner leaves out or swaps for a token: a value nested deep in each place.
    "deep fields": _line(b"20", b'"level":"debug","fields":{"d":#}'),
    "deep junk member of the envelope": b'{"jsonrpc":"2.0","id":21,"junk":#,' + LOG + b',"params":{"level":"debug"}}',
    "deep junk member of params": _line(b"22", b'"level":"debug","junk":#'),
    "Go-cased keys and deep junk": _line(b"23", b'"LEVEL":"debug","Message":"m","junk":#'),
    "escaped and folded keys": _line(b"24", b'"l\\u0065vel":"debug","me\xc5\xbfsage":"m","fie\\u006cds":{"d":#}'),
    "duplicate keys": _line(b"25", b'"level":5,"fields":{"d":#},"level":"debug","fields":{"n":1}'),
    "duplicate params": b'{"jsonrpc":"2.0","id":26,' + LOG + b',"params":{"level":7,"d":#},"params":{"level":"debug"}}',
    "wrong type, deep value": _line(b"27", b'"level":[#]'),
    "params an array": b'{"jsonrpc":"2.0","id":28,' + LOG + b',"params":[#]}',
    "id an array": b'{"jsonrpc":"2.0","id":[#],' + LOG + b',"params":{}}',
    "an answer nobody waits for": b'{"jsonrpc":"2.0","id":"nobody","result":[#]}',
    "a deep credential": (
        b'{"jsonrpc":"2.0","id":29,"method":"host.auth.save","params":{"name":"a.json","json":{"d":#}}}'
    ),
    "deep junk in a nested struct": (
        b'{"jsonrpc":"2.0","id":30,"method":"host.http.do","params":{"request":{"url":"ftp://x/","junk":#}}}'
    ),
    # Batches are scanned too: each element object is read as an object line is.
    "a batch": (
        b'[{"jsonrpc":"2.0","id":50,"method":"host.log","params":{"level":"debug","fields":{"d":#}}},'
        b'{"jsonrpc":"2.0","id":51,"method":"hostd.hello"}]'
    ),
    "a batch with junk, Go-cased keys and non-objects": (
        b'[{"jsonrpc":"2.0","id":52,"method":"host.log","params":{"LEVEL":"debug","junk":#}},[#],5,"@",'
        b'{"jsonrpc":"2.0","id":53,"method":"host.nope","junk":#},{"jsonrpc":"2.0","id":[#],"method":"host.log"}]'
    ),
    "a batch of an answer and a notification": (
        b'[{"jsonrpc":"2.0","id":"nobody","result":[#]},{"jsonrpc":"2.0","method":"host.log","params":{"d":#}}]'
    ),
    "a batch of 1,025 elements": b'["@"' + b",1" * 1024 + b"]",
    "a batch of 300, served in steps": (
        b'[{"jsonrpc":"2.0","id":60,"method":"host.log","params":{"fields":{"p":"@"}}}'
        + b"".join(b',{"jsonrpc":"2.0","id":%d,"method":"hostd.hello"}' % i for i in range(61, 360))
        + b"]"
    ),
    "nesting 700 deep after the pad": _line(b"31", b'"fields":{"d":#,"e":' + b"[" * 700 + b"]" * 700 + b"}"),
    "invalid UTF-8 in a key after the pad": _line(b"34", b'"fields":{"d":#},"\xff":1'),
    "nesting 5000 deep after the pad": _line(b"32", b'"fields":{"d":#,"e":' + b"[" * 5000 + b"]" * 5000 + b"}"),
}


async def _start(build: str, tmp: Path) -> HostdProcess:
    tmp.mkdir(exist_ok=True)
    if build == "scanner":
        assert scan.available(), "hostd._scan was not built: pip install needs a C compiler and Python's headers"
        return await start_hostd(tmp)
    return await start_hostd(tmp, command=hostd_without("hostd._scan"))


@pytest.fixture(params=["scanner", "without scanner"])
async def hp(request: pytest.FixtureRequest, short_tmp: Path) -> AsyncIterator[HostdProcess]:
    """A hostd with the scanner (as ``make install`` builds it) and one without (no C compiler)."""
    proc = await _start(request.param, short_tmp)
    try:
        yield proc
    finally:
        await proc.stop()


@pytest.mark.parametrize("name", list(CASES))
async def test_a_long_line_is_answered_as_its_short_twin(hp: HostdProcess, name: str) -> None:
    assert hp.socket is not None
    template = CASES[name]
    answers: list[object] = []
    silent = name in ("notification", "an answer nobody waits for", "a batch of an answer and a notification")
    async with await RawConn.open(hp.socket) as conn:
        for pad in (b"", PAD):
            line = template.replace(b"@", pad).replace(b"#", DEEP if pad else b"0")
            assert (len(line) > LONG_LINE) == bool(pad)
            await conn.send(line + b"\n")
            # The sentinel proves a silent line got no answer (a task's answer may come after it).
            await conn.send(b'{"jsonrpc":"2.0","id":"sentinel","method":"hostd.hello"}\n')
            got = [await conn.line() for _ in range(1 if silent else 2)]
            sentinel = [a for a in got if isinstance(a, dict) and a.get("id") == "sentinel"]
            assert sentinel != [], got
            answers.append(next((a for a in got if a not in sentinel), None))
    short, long = answers
    assert long == short, name
    assert (short is None) == silent


INVALID_AFTER_DEEP = {
    "a syntax error": _line(b"40", b'"level":"debug","fields":{"d":' + DEEP + b"},,"),
    "an unpaired surrogate": _line(b"41", b'"junk":' + DEEP + b',"message":"\\ud800"'),
    "a control character": b'{"jsonrpc":"2.0","junk":' + DEEP + b',"id":42,"method":"host.log","x":"\x01"}',
    "a truncated line": _line(b"43", b'"fields":{"d":' + DEEP)[:-2],
    "an invalid batch": b'[{"jsonrpc":"2.0","id":44,"method":"hostd.hello"},' + DEEP + b",{}," + DEEP + b",,]",
    "a batch element in error": b'[{"jsonrpc":"2.0","id":45,"method":"host.log","params":{"fields":' + DEEP + b",}}]",
}


async def test_an_invalid_long_line_is_answered_alike_with_and_without_the_scanner(short_tmp: Path) -> None:
    """The error comes after megabytes of valid nesting: the scanner's answer (msgspec reading
    the line with those values blanked out) names the same byte as msgspec reading it whole."""
    answers: dict[str, list[object]] = {name: [] for name in INVALID_AFTER_DEEP}
    for build in ("scanner", "without scanner"):
        proc = await _start(build, short_tmp / build.replace(" ", "-"))
        try:
            assert proc.socket is not None
            async with await RawConn.open(proc.socket) as conn:
                for name, line in INVALID_AFTER_DEEP.items():
                    assert len(line) > LONG_LINE
                    await conn.send(line + b"\n")
                    answers[name].append(await conn.line())
        finally:
            await proc.stop()
    for name, (scanned, usual) in answers.items():
        assert scanned == usual, name
        assert isinstance(scanned, dict) and scanned["error"]["code"] == -32700, (name, scanned)


def _decoders(name: str) -> ParamsDecoder | None:
    return ParamsDecoder(LogParams, "host log") if name == "host.log" else None


def test_a_long_exact_request_is_decoded_once_with_typed_params() -> None:
    line = b'{"jsonrpc":"2.0","id":1,"method":"host.log","params":{"level":"info","fields":{"pad":"' + PAD + b'"}}}'
    env = decode_long(line, _decoders)
    assert env is not None and env.method == "host.log"
    params = env.params
    assert isinstance(params, msgspec.Struct) and getattr(params, "level") == "info"  # noqa: B009
    absent = decode_long(b'{"jsonrpc":"2.0","method":"host.log","pad":"' + PAD + b'"}', _decoders)
    assert absent is not None and absent.params is UNSET


FALLBACKS = ["params before method", "Go-cased keys", "wrong type before the pad", "unknown method"]


@pytest.mark.parametrize("name", FALLBACKS)
def test_what_one_pass_cannot_answer_alike_goes_the_usual_way(name: str) -> None:
    assert decode_long(CASES[name].replace(b"@", PAD), _decoders) is None
