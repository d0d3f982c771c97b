"""``host.auth.*``: the proxy's credential files, listed, read by auth index, and saved.

The filesystem work lives in :mod:`hostd.credentials` and runs in a worker thread, so a
slow disk (fsync on save, a large directory on list) never blocks the event loop; the
work per call is bounded by ``auth.max_file_bytes``. This module checks params in the
spec's order and shapes the results as the proxy's credential manager does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from hostd.errors import HostCallFailed
from hostd.gocompat import (
    ZERO_TIME,
    format_rfc3339_nano,
    go_lower,
    go_trim,
    go_truncate,
    parse_go_bool,
    parse_go_int,
    parse_rfc3339,
)
from hostd.rpc.messages import fragment
from hostd.rpc.methods import CallContext, host_method

if TYPE_CHECKING:
    from hostd.credentials import Credential, CredentialStore

_JSON_SPACE = b" \t\r\n"
MAX_WEIGHT = 1_000_000
T = TypeVar("T")


class ListParams(msgspec.Struct, frozen=True, kw_only=True):
    # Not a scope-checked method (§7): the key is accepted, under another attribute name.
    caller_callback_id: str = msgspec.field(default="", name="host_callback_id")


class GetParams(msgspec.Struct, frozen=True, kw_only=True):
    auth_index: str | None = None  # Go leaves a string unchanged on null: same as absent
    # Not a scope-checked method (§7): the key is accepted, under another attribute name.
    caller_callback_id: str = msgspec.field(default="", name="host_callback_id")


class SaveParams(msgspec.Struct, frozen=True, kw_only=True):
    name: str | None = None
    # The credential's exact text as received: written byte for byte, never re-encoded.
    json: msgspec.Raw = msgspec.Raw(b"")
    # Not a scope-checked method (§7): the key is accepted, under another attribute name.
    caller_callback_id: str = msgspec.field(default="", name="host_callback_id")


def _store(ctx: CallContext) -> CredentialStore:
    store: CredentialStore | None = ctx.services.auth
    if store is None:
        raise HostCallFailed("auth directory is unavailable")
    return store


def _limit(ctx: CallContext) -> int:
    return int(ctx.services.config.auth.max_file_bytes)


def _index(params: GetParams) -> str:
    index = go_trim(params.auth_index or "")
    if not index:
        raise HostCallFailed("auth_index is required")
    return index


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking store work in a worker thread; its Go-text errors become -32000."""
    # Lazy: keeps start-up cheap (anyio's threads and the credential store load on the first host.auth.*).
    import anyio.to_thread

    from hostd.credentials import CredentialError

    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except CredentialError as e:
        raise HostCallFailed(e.message) from None


async def _scan(ctx: CallContext) -> list[Credential]:
    return await _in_thread(_store(ctx).scan, _limit(ctx), ctx.services.logger.warn)


async def _find(ctx: CallContext, index: str, *, listed_only: bool) -> Credential:
    """The credential with ``index``; a directory that cannot be read finds nothing."""
    store = _store(ctx)
    try:
        credentials = await _in_thread(store.scan, _limit(ctx), ctx.services.logger.warn)
    except HostCallFailed:
        credentials = []
    for c in credentials:
        if c.auth_index == index and (c.listed or not listed_only):
            return c
    raise HostCallFailed(f"auth not found for auth_index {index}")


def _text(value: Any) -> str:
    return go_trim(value) if isinstance(value, str) else ""


def parse_priority(value: Any) -> int | None:
    """A JSON number truncated toward zero, or a string holding an integer (trimmed)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return go_truncate(value)
    if isinstance(value, str):
        return parse_go_int(go_trim(value))
    return None


def _websockets(value: Any) -> bool:
    if isinstance(value, str):
        return parse_go_bool(go_trim(value)) is True
    return value is True


def entry(c: Credential) -> dict[str, Any]:
    """The list entry (Go's ``HostAuthFileEntry``) of a listed credential, as the proxy's
    credential manager builds it: empty, zero and false values omitted, the five times
    always present."""
    from hostd.credentials import Meta  # lazy: keeps start-up cheap (loaded by the scan already)

    meta = c.meta if c.meta is not None else Meta()
    type_ = c.type
    email = meta.email
    disabled = meta.disabled is True
    out: dict[str, Any] = {"id": c.name, "auth_index": c.auth_index, "name": c.name}
    out["type"] = out["provider"] = type_
    # The email exactly as stored (untrimmed) when it has any text, else the type.
    out["label"] = email if isinstance(email, str) and go_trim(email) else type_
    out["status"] = "disabled" if disabled else "active"
    if disabled:
        out["disabled"] = True
    out["source"] = "file"
    out["path"] = c.path
    if c.size:
        out["size"] = c.size
    modtime = format_rfc3339_nano(c.mtime_ns)
    out["modtime"] = modtime
    out["updated_at"] = modtime
    out["created_at"] = ZERO_TIME  # runtime state the proxy holds, hostd does not
    refresh = meta.last_refresh
    out["last_refresh"] = format_rfc3339_nano(parse_rfc3339(refresh) if isinstance(refresh, str) else None)
    out["next_retry_after"] = ZERO_TIME
    priority = parse_priority(meta.priority) if meta.priority is not msgspec.UNSET else None
    for key, value in (
        ("email", _text(email)),
        ("project_id", _text(meta.project_id)),
        ("priority", priority or 0),
        ("note", _text(meta.note)),
        ("websockets", _websockets(meta.websockets)),
    ):
        if value:
            out[key] = value
    return out


def _why_unlisted(c: Credential) -> str:
    if c.read_error is not None:
        return "unreadable"
    if c.meta is None:
        return "not a JSON object"
    return "no type"


@host_method("host.auth.list", ListParams, "host auth list")
async def auth_list(ctx: CallContext, params: ListParams) -> dict[str, Any]:
    files = []
    logger = ctx.services.logger
    for c in await _scan(ctx):
        if c.listed:
            files.append(entry(c))
        elif logger.enabled(10):
            logger.debug("auth file skipped", file=c.name, reason=_why_unlisted(c))
    return {"files": files}


def _read(store: CredentialStore, c: Credential, index: str, max_bytes: int) -> bytes:
    """The file's bytes now, checked as Go checks them before embedding them."""
    from hostd.credentials import CredentialError, go_error, read_meta  # lazy: keeps start-up cheap

    if c.read_error is not None:
        error: OSError = c.read_error
    else:
        try:
            data = store.read(c, max_bytes)
        except OSError as e:
            error = e
        else:
            if len(data) > max_bytes:
                raise CredentialError(f"auth not found for auth_index {index}")
            if not go_trim(data.decode("utf-8", "replace")):
                raise CredentialError(f"auth file is empty for auth_index {index}")
            meta, problem = read_meta(data)
            if meta is None:
                raise CredentialError(f"invalid auth file for auth_index {index}: {problem}")
            return data
    if isinstance(error, FileNotFoundError):
        raise CredentialError(f"auth file not found for auth_index {index}")
    raise CredentialError(f"failed to read auth file: {go_error('open', c.path, error)}")


@host_method("host.auth.get", GetParams, "host auth get")
async def auth_get(ctx: CallContext, params: GetParams) -> dict[str, Any]:
    index = _index(params)
    c = await _find(ctx, index, listed_only=False)
    data = await _in_thread(_read, _store(ctx), c, index, _limit(ctx))
    # Validated JSON: embedded as it is on disk (newlines between tokens become spaces).
    return {"auth_index": index, "name": c.name, "path": c.path, "json": fragment(data.strip(_JSON_SPACE))}


@host_method("host.auth.get_runtime", GetParams, "host auth get runtime")
async def auth_get_runtime(ctx: CallContext, params: GetParams) -> dict[str, Any]:
    index = _index(params)
    return {"auth": entry(await _find(ctx, index, listed_only=True))}


def check_weight(value: Any) -> str:
    """Why ``weight`` is refused (credentialweight.ParseValue), or '' when it is valid."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return "weight must be an integer"
    if isinstance(value, str):
        text = go_trim(value)
        if not text:
            return ""  # the default weight
        parsed = parse_go_int(text)
        if parsed is None:
            return "weight must be an integer"
        number = float(parsed)
    else:
        try:
            number = float(value)
        except OverflowError:
            return f"weight must not exceed {MAX_WEIGHT}"
        if not number.is_integer():
            return "weight must be an integer"
    if number > MAX_WEIGHT:
        return f"weight must not exceed {MAX_WEIGHT}"
    return ""


def _has_drive(name: str) -> bool:
    """``C:…``: an ASCII letter then a colon (a Windows drive; no regex compiled at start)."""
    return name[1:2] == ":" and name[0].isascii() and name[0].isalpha()


def validate_save(name: str, raw: bytes, max_bytes: int) -> tuple[str, Any]:
    """The request checks of a save in the proxy's order, up to the directory: the
    trimmed name and the credential's ``weight`` (``msgspec.UNSET`` when absent).

    The size is checked before anything is parsed, so the work is bounded by
    ``max_bytes``: one msgspec pass that builds only the metadata, no walk in Python.
    """
    from hostd.credentials import read_meta  # lazy: keeps start-up cheap (first host.auth.save)

    name = go_trim(name)
    if not name or "/" in name or "\\" in name or _has_drive(name):
        raise HostCallFailed("invalid auth file name")
    if not go_lower(name).endswith(".json"):
        raise HostCallFailed("auth file name must end with .json")
    if not raw:
        raise HostCallFailed("json is required")
    if len(raw) > max_bytes:
        raise HostCallFailed("auth file is too large")
    meta, problem = read_meta(raw)
    if meta is None:
        raise HostCallFailed(f"invalid auth json: {problem}")
    return name, meta.weight


@host_method("host.auth.save", SaveParams, "host auth save")
async def auth_save(ctx: CallContext, params: SaveParams) -> dict[str, Any]:
    raw = bytes(params.json)
    name, weight = validate_save(params.name or "", raw, _limit(ctx))
    store = _store(ctx)  # the directory comes before the weight, as in Go
    if weight is not msgspec.UNSET and (reason := check_weight(weight)):
        raise HostCallFailed(f"invalid auth weight: invalid metadata weight: {reason}")
    path = await _in_thread(store.save, name, raw)
    return {"name": name, "path": path}


METHODS = (auth_list, auth_get, auth_get_runtime, auth_save)
