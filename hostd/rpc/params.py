"""Decoding one method's params into its struct, as Go's ``encoding/json`` would read them.

Go plugins marshal untagged SDK structs (``{"Method":"GET","URL":…}``) and Go's decoder
matches keys case-insensitively, reads base64 with line breaks and takes ``null`` where a
list or string is expected. hostd matches the same payloads (PROTOCOL §3) in one place:

- **fast path**: one msgspec decode into a *strict twin* of the struct (the same fields,
  ``forbid_unknown_fields=True``, nested struct fields strict too). A lower-case payload
  whose keys are all fields decodes here: one msgspec call, as before, plus one Python
  call around it (about 50 ns; callers that want none use ``exact`` and ``recover``).
- **slow path**, only when the strict decode refused (an unknown key, which may be a
  folded spelling such as ``Method`` next to an exact ``url``, or a value msgspec reads
  more strictly than Go): the object is decoded to ``dict[str, msgspec.Raw]``, folded
  keys are renamed to the field names (an exact key wins, else the last folded key;
  recursively for nested struct fields, never inside maps), Go's leniencies are applied
  to the few field types that have them (base64 with line breaks, ``null`` in header
  maps and string lists, ``null`` for a field that cannot be null leaves it unchanged),
  and the result is re-encoded and decoded once more (every key left is a field). Its
  error, if any, is the one reported.

Nothing here knows a method: the struct describes everything.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import inspect as mi

from hostd.errors import InvalidParams
from hostd.gocompat import fold_name

__all__ = ["ParamsDecoder", "fold_object"]

_raw_object = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_str_or_none = msgspec.json.Decoder(str | None).decode
_str_lists = msgspec.json.Decoder(dict[str, list[str | None] | None] | None).decode
_str_list = msgspec.json.Decoder(list[str | None] | None).decode
_encode = msgspec.json.encode
_NULL = msgspec.Raw(b"null")


class ParamsDecoder:
    """Decodes one method's params into its struct with the spec's error texts.

    ``decode(data)`` returns the struct or raises ``msgspec.DecodeError`` with the text
    to report; callers pass absent params as ``empty()`` and map errors with :meth:`error`.
    A caller that wants no Python frame on the fast path calls ``exact`` (msgspec's own
    bound method) and, on ``msgspec.ValidationError`` only, ``recover`` with the same data.
    """

    __slots__ = ("_empty", "_struct", "_what", "decode", "exact", "recover", "twin")

    decode: Callable[[Any], Any]
    exact: Callable[[Any], Any]
    recover: Callable[[Any], Any]
    twin: type[Any]  # the strict twin ``exact`` decodes into
    _empty: Any

    def __init__(self, struct: type[Any], what: str) -> None:
        # The decoders are built on the method's first call (a plugin's start-up pays for none
        # of the ~40 tables it may never use); after that the slots answer directly.
        self._struct = struct
        self._what = what

    def __getattr__(self, name: str) -> Any:
        if name not in ("_empty", "decode", "exact", "recover", "twin"):
            raise AttributeError(name)
        self._build()
        return object.__getattribute__(self, name)

    def _build(self) -> None:
        struct = self._struct
        self.twin = _strict_twin(struct)
        exact = msgspec.json.Decoder(self.twin).decode
        lenient = msgspec.json.Decoder(struct).decode
        plan = _plan(struct)

        def recover(data: Any) -> Any:
            try:
                obj = _raw_object(data)
            except msgspec.ValidationError:
                return lenient(data)  # not an object: the struct's own error
            return exact(_encode(plan.fold(obj)))  # only known keys remain

        def decode(data: Any) -> Any:
            try:
                return exact(data)
            except msgspec.ValidationError:
                return recover(data)

        self.decode = decode
        self.exact = exact
        self.recover = recover
        self._empty = exact(b"{}") if _all_defaults(struct) else None

    @property
    def struct(self) -> type[Any]:
        """The struct the params decode into (``twin`` is its strict copy)."""
        return self._struct

    def empty(self) -> Any:
        """The params of a request that sent none (absent params mean ``{}``)."""
        return self._empty if self._empty is not None else self.decode_or_raise(b"{}")

    def decode_or_raise(self, data: Any) -> Any:
        try:
            return self.decode(data)
        except msgspec.DecodeError as e:
            raise self.error(e) from None

    def error(self, e: msgspec.DecodeError) -> InvalidParams:
        text = str(e)
        if text.startswith("Expected `object`, got") and " - at `" not in text:
            return InvalidParams("params must be an object")
        return InvalidParams(f"decode {self._what} request: {text}")


def _all_defaults(struct: type[Any]) -> bool:
    try:
        msgspec.json.decode(b"{}", type=struct)
    except msgspec.ValidationError:
        return False
    return True


# The slow path's plan of a struct ------------------------------------------------------


class _Plan:
    """What the slow path does to one struct's object: key names, and per-field fixes.
    (A plain class: a dataclass compiles its methods at every start.)"""

    __slots__ = ("base64", "exact", "folded", "nested", "not_null", "str_list", "str_lists")

    def __init__(self, exact: frozenset[str], folded: dict[str, str]) -> None:
        self.exact = exact
        self.folded = folded  # fold_name(field name) -> field name
        self.nested: dict[str, _Plan] = {}
        self.base64: set[str] = set()  # []byte: \r and \n are ignored
        self.str_lists: set[str] = set()  # http.Header, url.Values
        self.str_list: set[str] = set()  # []string
        self.not_null: set[str] = set()  # a JSON null leaves these unchanged, as in Go

    def __repr__(self) -> str:
        return f"_Plan(exact={sorted(self.exact)!r}, nested={sorted(self.nested)!r})"

    def fold(self, obj: dict[str, msgspec.Raw]) -> dict[str, msgspec.Raw]:
        out: dict[str, msgspec.Raw] = {}
        from_fold: set[str] = set()
        for key, value in obj.items():
            if key in self.exact:
                out[key] = value
                from_fold.discard(key)
                continue
            name = self.folded.get(fold_name(key))
            if name is None:
                continue  # an unknown key: ignored, as Go ignores it
            if name not in out or name in from_fold:
                out[name] = value
                from_fold.add(name)
        for name, value in out.items():
            out[name] = self._fix(name, value)
        if self.not_null:
            for name in [n for n in self.not_null if n in out and out[n] == _NULL]:
                del out[name]
        return out

    def _fix(self, name: str, value: msgspec.Raw) -> msgspec.Raw:
        if name in self.nested:
            try:
                inner = _raw_object(value)
            except msgspec.ValidationError:
                return value  # not an object: the struct decode reports it
            return msgspec.Raw(_encode(self.nested[name].fold(inner)))
        data = bytes(value) if name in self.base64 or name in self.str_lists or name in self.str_list else b""
        if name in self.base64 and (b"\\r" in data or b"\\n" in data):
            try:
                text = _str_or_none(value)
            except msgspec.ValidationError:
                return value
            if text is not None:
                return msgspec.Raw(_encode(text.replace("\r", "").replace("\n", "")))
        elif name in self.str_lists and b"null" in data:
            try:
                lists = _str_lists(value)
            except msgspec.ValidationError:
                return value
            if lists is not None:
                fixed = {k: [s or "" for s in v] if v is not None else [] for k, v in lists.items()}
                return msgspec.Raw(_encode(fixed))
        elif name in self.str_list and b"null" in data:
            try:
                items = _str_list(value)
            except msgspec.ValidationError:
                return value
            if items is not None:
                return msgspec.Raw(_encode([s or "" for s in items]))
        return value


_plans: dict[type[Any], _Plan] = {}


def fold_object(struct: type[Any], obj: dict[str, msgspec.Raw]) -> dict[str, msgspec.Raw]:
    """What the slow path makes of a params object before its last decode (``recover``)."""
    return _plan(struct).fold(obj)


def _plan(struct: type[Any]) -> _Plan:
    plan = _plans.get(struct)
    if plan is None:
        info = mi.type_info(struct)
        assert isinstance(info, mi.StructType)
        plan = _plan_of(info)
        _plans[struct] = plan
    return plan


def _plan_of(info: mi.StructType) -> _Plan:
    names = [f.encode_name for f in info.fields]
    folded: dict[str, str] = {}
    for name in names:
        folded.setdefault(fold_name(name), name)
    plan = _Plan(exact=frozenset(names), folded=folded)
    for f in info.fields:
        kinds = _members(f.type)
        if not any(isinstance(k, mi.NoneType | mi.AnyType | mi.RawType) for k in kinds):
            plan.not_null.add(f.encode_name)
        structs = [k for k in kinds if isinstance(k, mi.StructType)]
        if structs:
            plan.nested[f.encode_name] = _plan(structs[0].cls)
        elif any(isinstance(k, mi.BytesType) for k in kinds):
            plan.base64.add(f.encode_name)
        elif any(_is_str_lists(k) for k in kinds):
            plan.str_lists.add(f.encode_name)
        elif any(isinstance(k, mi.ListType) and isinstance(k.item_type, mi.StrType) for k in kinds):
            plan.str_list.add(f.encode_name)
    return plan


def _members(t: mi.Type) -> tuple[mi.Type, ...]:
    return t.types if isinstance(t, mi.UnionType) else (t,)


def _is_str_lists(t: mi.Type) -> bool:
    return (
        isinstance(t, mi.DictType)
        and isinstance(t.value_type, mi.ListType)
        and isinstance(t.value_type.item_type, mi.StrType)
    )


# The fast path's strict twin -----------------------------------------------------------

_twins: dict[type[Any], type[Any]] = {}


def _strict_twin(struct: type[Any]) -> type[Any]:
    """A subclass of ``struct`` that refuses unknown keys, with strict nested structs.

    Its instances are instances of ``struct``, so handlers never see a difference.
    """
    twin = _twins.get(struct)
    if twin is not None:
        return twin
    overrides: list[tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(struct):  # annotations already resolved by msgspec
        strict = _strict_hint(f.type)
        if strict is not f.type:
            default = (
                msgspec.field(default_factory=f.default_factory, name=f.encode_name)
                if f.default_factory is not msgspec.NODEFAULT
                else msgspec.field(default=f.default, name=f.encode_name)
                if f.default is not msgspec.NODEFAULT
                else msgspec.field(name=f.encode_name)
            )
            overrides.append((f.name, strict, default))
    config = struct.__struct_config__
    twin = msgspec.defstruct(
        f"Strict{struct.__name__}",
        overrides,
        bases=(struct,),
        module=struct.__module__,
        kw_only=True,
        frozen=config.frozen,
        forbid_unknown_fields=True,
    )
    _twins[struct] = twin
    return twin


def _strict_hint(hint: Any) -> Any:
    """``hint`` with every Struct class in it (directly or in a union) made strict."""
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return _strict_twin(hint)
    args = typing.get_args(hint)
    if args and typing.get_origin(hint) in (typing.Union, _UnionType):
        strict_args = tuple(_strict_hint(a) for a in args)
        if any(s is not a for s, a in zip(strict_args, args, strict=True)):
            return typing.Union[strict_args]  # noqa: UP007 - built from a tuple
    return hint


_UnionType = type(int | None)
