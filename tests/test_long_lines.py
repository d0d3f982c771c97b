"""Long lines are decoded in one pass (``hostd.rpc.messages.decode_long``) and answered
exactly as the usual two-pass decode answers them.

Each case is sent twice on a real hostd: with an empty pad (a short line, the usual path)
and with a 100 KiB pad placed *after* whatever the case tests, so error positions are the
same in both; the two answers must be equal.
"""

from __future__ import annotations

import msgspec
import pytest

from hostd.handlers.log import LogParams
from hostd.rpc.messages import LONG_LINE, UNSET, decode_long
from hostd.rpc.params import ParamsDecoder
from tests.support.hostd_proc import HostdProcess
from tests.support.raw import RawConn

pytestmark = pytest.mark.anyio

PAD = b"x" * (LONG_LINE + 36 * 1024)

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
}


@pytest.mark.parametrize("name", list(CASES))
async def test_a_long_line_is_answered_as_its_short_twin(hp: HostdProcess, name: str) -> None:
    assert hp.socket is not None
    template = CASES[name]
    answers: list[object] = []
    async with await RawConn.open(hp.socket) as conn:
        for pad in (b"", PAD):
            line = template.replace(b"@", pad)
            assert (len(line) > LONG_LINE) == bool(pad)
            await conn.send(line + b"\n")
            # The sentinel proves a notification got no answer and orders the answers.
            await conn.send(b'{"jsonrpc":"2.0","id":"sentinel","method":"hostd.hello"}\n')
            answer = await conn.line()
            if isinstance(answer, dict) and answer.get("id") == "sentinel":
                answers.append(None)
                continue
            answers.append(answer)
            assert (await conn.line())["id"] == "sentinel"
    short, long = answers
    assert long == short, name
    if name == "notification":
        assert short is None
    else:
        assert short is not None


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
