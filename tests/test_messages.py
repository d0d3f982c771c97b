"""Answer encoding: byte fields come out as standard padded base64 whichever encoder runs."""

from __future__ import annotations

import base64
import os

import msgspec
import pytest

from hostd.rpc import messages


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
