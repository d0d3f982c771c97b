"""Header maps as the native host has them: ``{"Name": ["v1", "v2"]}``, names canonical as Go makes them."""

from __future__ import annotations

import functools
from collections.abc import Iterable

_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def is_token(text: str) -> bool:
    """An HTTP token (a method or header name), as RFC 9110 defines it."""
    return bool(text) and all(c in _TOKEN for c in text)


@functools.lru_cache(maxsize=1024)
def canonical_key(key: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: ``x-api-key`` -> ``X-Api-Key``.

    A key with a character that is not a token character is returned unchanged, as Go does.
    """
    if not key or any(c not in _TOKEN for c in key):
        return key
    out = []
    upper = True
    for c in key:
        if upper and "a" <= c <= "z":
            c = c.upper()
        elif not upper and "A" <= c <= "Z":
            c = c.lower()
        out.append(c)
        upper = c == "-"
    return "".join(out)


def header_map(raw: Iterable[tuple[bytes, bytes]], drop: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Response headers as a canonical ``{name: [values]}`` map; ``drop`` holds canonical names."""
    out: dict[str, list[str]] = {}
    for name, value in raw:
        key = canonical_key(name.decode("latin-1"))
        if key in drop:
            continue
        out.setdefault(key, []).append(value.decode("latin-1"))
    return out


def header_list(headers: dict[str, list[str]] | None) -> list[tuple[str, str]]:
    """A plugin's request header map as an ordered list of pairs, names as given."""
    if not headers:
        return []
    return [(name, value) for name, values in headers.items() for value in values]


def has_header(pairs: list[tuple[str, str]], name: str) -> bool:
    lname = name.lower()
    return any(k.lower() == lname for k, _ in pairs)
