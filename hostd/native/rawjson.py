"""JSON without re-encoding, for the native worker: values kept beside their exact text.

Results and params pass through the worker byte for byte: a top-level object is walked key by key
and each value's exact text is kept beside its decoded value (:func:`parse_object`). hostd's own
lines are matched on the bytes (:data:`SUCCESS`, :data:`REQUEST`) so that a large result or params
object is sliced, never decoded and re-encoded. Also here: Go's ``json.Valid`` and
``json.Marshal`` string rules, and keeping raw JSON on one line.

Pure functions only: this module never does I/O, never holds a lock across calls and never imports
hostd's daemon modules (it is part of the standard-library-only worker).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

_WS = re.compile(r"[ \t\n\r]*")
# hostd's own lines, as its encoder writes them (keys in this order, no spaces). Any other shape
# takes the general path (parse_object).
SUCCESS = re.compile(rb'\{"jsonrpc":"2\.0","id":([0-9]{1,18}),"result":')
REQUEST = re.compile(
    rb'\{"jsonrpc":"2\.0","id":("(?:[^"\\]|\\.)*"|-?[0-9]{1,18}),"method":("(?:[^"\\]|\\.)*"),"params":'
)

_local = threading.local()

Members = list[tuple[str, Any, str]]


def _skip_ws(text: str, i: int) -> int:
    match = _WS.match(text, i)
    return match.end() if match is not None else i


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decoder() -> json.JSONDecoder:
    # One decoder per thread: the C scanner's key memo is not meant to be shared across threads.
    decoder: json.JSONDecoder | None = getattr(_local, "decoder", None)
    if decoder is None:
        decoder = json.JSONDecoder(parse_constant=_reject_constant)
        _local.decoder = decoder
    return decoder


def parse_object(text: str) -> Members | None:
    """The members of the JSON object ``text`` as ``(key, value, raw text)``, in order; else None."""
    decoder = _decoder()
    n = len(text)
    i = _skip_ws(text, 0)
    if i >= n or text[i] != "{":
        return None
    i = _skip_ws(text, i + 1)
    members: Members = []
    try:
        if i < n and text[i] == "}":
            i += 1
        else:
            while True:
                if i >= n or text[i] != '"':
                    return None
                key, i = json.decoder.scanstring(text, i + 1, True)  # type: ignore[attr-defined]
                i = _skip_ws(text, i)
                if i >= n or text[i] != ":":
                    return None
                i = _skip_ws(text, i + 1)
                value, end = decoder.raw_decode(text, i)
                members.append((key, value, text[i:end]))
                i = _skip_ws(text, end)
                if i < n and text[i] == ",":
                    i = _skip_ws(text, i + 1)
                    continue
                if i < n and text[i] == "}":
                    i += 1
                    break
                return None
    except (ValueError, RecursionError):
        return None
    if _skip_ws(text, i) != n:
        return None
    return members


def is_json_value(text: str) -> bool:
    """Exactly one JSON value, surrounded by whitespace at most (Go's ``json.Valid``)."""
    try:
        start = _skip_ws(text, 0)
        _, end = _decoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        return False
    return _skip_ws(text, end) == len(text)


def one_line(raw: str) -> str:
    """Valid JSON holds CR and LF only as whitespace between tokens: blank them to keep one line."""
    if "\n" in raw or "\r" in raw:
        return raw.replace("\n", " ").replace("\r", " ")
    return raw


def folded(members: Members) -> dict[str, tuple[Any, str]]:
    """Members by lower-cased key, the last one winning: how Go's decoder fills a struct."""
    return {key.lower(): (value, raw) for key, value, raw in members}


_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def go_string(value: str) -> str:
    """A JSON string as Go's ``json.Marshal`` writes it (HTML characters escaped, UTF-8 kept)."""
    return json.dumps(value, ensure_ascii=False).translate(_GO_ESCAPES)
