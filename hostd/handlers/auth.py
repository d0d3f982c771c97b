"""``host.auth.*``: the proxy's credential files, listed, read by auth index, and saved.

The filesystem work lives in :mod:`hostd.upstream.credentials` and runs in a worker
thread, so a slow disk (fsync on save, a large directory on list) never blocks the
event loop. This module checks params in the spec's order and shapes the results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import msgspec

from hostd.errors import HostCallFailed
from hostd.handlers.base import CallContext, host_method
from hostd.rpc.messages import fragment
from hostd.upstream.credentials import (
    Credential,
    CredentialError,
    CredentialStore,
    format_time,
    go_error,
    go_trim,
    validate_save,
)

_JSON_SPACE = b" \t\r\n"
T = TypeVar("T")


class ListParams(msgspec.Struct, frozen=True, kw_only=True):
    host_callback_id: str = ""


class GetParams(msgspec.Struct, frozen=True, kw_only=True):
    auth_index: str | None = None  # Go leaves a string unchanged on null: same as absent
    host_callback_id: str = ""


class SaveParams(msgspec.Struct, frozen=True, kw_only=True):
    name: str | None = None
    # The credential's exact text as received: written byte for byte, never re-encoded.
    json: msgspec.Raw = msgspec.Raw(b"")
    host_callback_id: str = ""


def _store(ctx: CallContext) -> CredentialStore:
    store: CredentialStore | None = ctx.services.auth
    if store is None:
        raise HostCallFailed("auth directory is unavailable")
    return store


def _index(params: GetParams) -> str:
    index = go_trim(params.auth_index or "")
    if not index:
        raise HostCallFailed("auth_index is required")
    return index


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking store work in a worker thread; its Go-text errors become -32000."""
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except CredentialError as e:
        raise HostCallFailed(e.message) from None


async def _find(ctx: CallContext, index: str) -> Credential:
    credential = await _in_thread(_store(ctx).find, index)
    if credential is None:
        raise HostCallFailed(f"auth not found for auth_index {index}")
    return credential


def entry(c: Credential) -> dict[str, Any]:
    """The list entry (Go's ``HostAuthFileEntry``): empty, zero and false values omitted,
    the five times always present. A file that is not a JSON object keeps only the
    fields that do not come from its content."""
    out: dict[str, Any] = {"id": c.name, "auth_index": c.auth_index, "name": c.name}
    if c.meta is not None:
        type_, email = c.type, c.email
        if type_:
            out["type"] = out["provider"] = type_
        if email or type_:
            out["label"] = email or type_
        out["status"] = "disabled" if c.disabled else "active"
        if c.disabled:
            out["disabled"] = True
    out["source"] = "file"
    out["path"] = c.path
    if c.size:
        out["size"] = c.size
    modtime = format_time(c.mtime_ns)
    out["modtime"] = modtime
    out["updated_at"] = modtime
    out["created_at"] = format_time(None)  # runtime state the proxy holds, hostd does not
    out["last_refresh"] = format_time(c.last_refresh_ns)
    out["next_retry_after"] = format_time(None)
    if c.meta is not None:
        for key, value in (
            ("email", c.email),
            ("project_id", c.project_id),
            ("priority", c.priority),
            ("note", c.note),
            ("websockets", c.websockets),
        ):
            if value:
                out[key] = value
    return out


@host_method("host.auth.list", ListParams, "host auth list")
async def auth_list(ctx: CallContext, params: ListParams) -> dict[str, Any]:
    credentials = await _in_thread(_store(ctx).scan)
    return {"files": [entry(c) for c in credentials]}


@host_method("host.auth.get", GetParams, "host auth get")
async def auth_get(ctx: CallContext, params: GetParams) -> dict[str, Any]:
    index = _index(params)
    c = await _find(ctx, index)
    if c.data is None:
        error = c.read_error
        if error is None or isinstance(error, FileNotFoundError):
            raise HostCallFailed(f"auth file not found for auth_index {index}")
        raise HostCallFailed(f"failed to read auth file: {go_error('open', c.path, error)}")
    if c.is_empty():
        raise HostCallFailed(f"auth file is empty for auth_index {index}")
    if c.meta is None:
        raise HostCallFailed(f"invalid auth file for auth_index {index}: {c.problem}")
    # Validated JSON: embedded as it is on disk (newlines between tokens become spaces).
    return {"auth_index": index, "name": c.name, "path": c.path, "json": fragment(c.data.strip(_JSON_SPACE))}


@host_method("host.auth.get_runtime", GetParams, "host auth get runtime")
async def auth_get_runtime(ctx: CallContext, params: GetParams) -> dict[str, Any]:
    index = _index(params)
    return {"auth": entry(await _find(ctx, index))}


@host_method("host.auth.save", SaveParams, "host auth save")
async def auth_save(ctx: CallContext, params: SaveParams) -> dict[str, Any]:
    raw = bytes(params.json)
    try:
        name = validate_save(params.name or "", raw)
    except CredentialError as e:
        raise HostCallFailed(e.message) from None
    path = await _in_thread(_store(ctx).save, name, raw)
    return {"name": name, "path": path}


METHODS = (auth_list, auth_get, auth_get_runtime, auth_save)
