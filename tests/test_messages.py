"""Answer encoding: byte fields come out as standard padded base64 whichever encoder runs; the
preformatted answer of an empty result is the encoded one."""

from __future__ import annotations

import base64
import os
import sys

import msgspec
import pytest

from hostd.rpc import messages
from hostd.rpc.messages import EMPTY, encode_result


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", os.urandom(32768), bytes(range(256))])
def test_b64_field_encodes_as_standard_base64_with_and_without_pybase64(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = b'{"payload":"' + base64.b64encode(data) + b'"}'
    assert msgspec.json.encode({"payload": messages.b64(data)}) == expected
    monkeypatch.setattr(messages, "_fast_b64encode", None)  # the path without the fast extra
    assert msgspec.json.encode({"payload": messages.b64(data)}) == expected


def test_fragment_keeps_framing() -> None:
    raw = messages.fragment(b'{"a":\n1,\r\n"b":"x\\ny"}')
    assert b"\n" not in msgspec.json.encode({"r": raw})
    assert msgspec.json.decode(msgspec.json.encode({"r": raw})) == {"r": {"a": 1, "b": "x\ny"}}


@pytest.mark.parametrize("installed", [True, False])
def test_b64_imports_pybase64_on_its_first_call_and_falls_back_without_it(
    installed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pybase64 is not loaded at start (issue 16): the first byte field imports it, or,
    when it is absent, encodes that one field itself and leaves the next ones to msgspec."""
    monkeypatch.setattr(messages, "_fast_b64encode", messages._first_b64encode)
    if not installed:
        monkeypatch.setitem(sys.modules, "pybase64", None)  # import pybase64 raises ImportError
    data = bytes(range(256)) * 3
    expected = b'{"payload":"' + base64.b64encode(data) + b'"}'
    assert msgspec.json.encode({"payload": messages.b64(data)}) == expected  # the first call
    if installed:
        import pybase64

        assert messages._fast_b64encode is pybase64.b64encode
    else:
        assert messages._fast_b64encode is None
    assert msgspec.json.encode({"payload": messages.b64(data)}) == expected  # the next ones


@pytest.mark.parametrize("id_", [0, 1, -1, 7, 2**53 + 1, 2**63 - 1, -(2**63), "s", 1.5, None])
def test_the_preformatted_empty_answer_is_what_the_encoder_writes(id_: int | str | float | None) -> None:
    # EMPTY itself is preformatted for an integer id; another empty dict goes through the encoder.
    assert (
        encode_result(id_, EMPTY)
        == encode_result(id_, {})
        == msgspec.json.encode({"jsonrpc": "2.0", "id": id_, "result": {}})
    )
    assert EMPTY == {}  # shared by every handler that returns it: never mutated
