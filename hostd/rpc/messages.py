"""JSON-RPC envelopes, decoded once at the edge with msgspec and encoded with orjson.

``params`` stays a ``msgspec.Raw`` so each method decodes it into its own struct (and
an absent member is told apart from ``null``). Answers are built as bytes here and
nowhere else.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import orjson

from hostd.errors import HostError, InvalidParams

RequestId = int | float | str

UNSET = msgspec.UNSET
UnsetType = msgspec.UnsetType


class Envelope(msgspec.Struct, kw_only=True):
    """Any incoming JSON-RPC message: a request, a notification, or an answer to hostd."""

    jsonrpc: str | UnsetType = UNSET
    id: int | float | str | UnsetType | None = UNSET
    method: str | UnsetType = UNSET
    params: msgspec.Raw = msgspec.Raw(b"")
    result: msgspec.Raw = msgspec.Raw(b"")
    error: msgspec.Raw = msgspec.Raw(b"")


envelope_decoder = msgspec.json.Decoder(Envelope)
raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])


class _Empty(msgspec.Struct):
    pass


S = TypeVar("S")


class ParamsDecoder:
    """Decodes one method's params into its struct with the spec's error texts."""

    __slots__ = ("_decoder", "_empty", "_what")

    def __init__(self, struct: type[S], what: str) -> None:
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(struct)
        self._what = what
        self._empty = self._decoder.decode(b"{}") if _all_defaults(struct) else None

    def decode(self, raw: msgspec.Raw) -> Any:
        data = bytes(raw)
        if not data:
            if self._empty is not None:
                return self._empty
            data = b"{}"
        first = data.lstrip()[:1]
        if first != b"{":
            raise InvalidParams("params must be an object")
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as e:
            raise InvalidParams(f"decode {self._what} request: {e}") from None
        except msgspec.DecodeError as e:  # pragma: no cover - the envelope was valid JSON
            raise InvalidParams(f"decode {self._what} request: {e}") from None


def _all_defaults(struct: type[Any]) -> bool:
    try:
        msgspec.json.decode(b"{}", type=struct)
    except msgspec.ValidationError:
        return False
    return True


# Answers -------------------------------------------------------------------------------

_NL = b"\n"


def encode_result(id_: RequestId | None, result: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": id_, "result": result})


def encode_error(id_: RequestId | None, err: HostError) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": id_, "error": err.to_error()})


def encode_request(id_: RequestId | None, method: str, params: Any) -> bytes:
    if id_ is None:
        return orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params})
    return orjson.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params})


def fragment(raw: bytes) -> orjson.Fragment:
    """Embed already-encoded JSON; raw newlines would break framing, so they become spaces.

    A newline can only appear between tokens of valid JSON (inside strings it is escaped),
    so replacing it does not change the value.
    """
    if b"\n" in raw or b"\r" in raw:
        raw = raw.replace(b"\r", b" ").replace(b"\n", b" ")
    return orjson.Fragment(raw)
