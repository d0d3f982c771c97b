"""Reload planning: which keys differ between two configurations, and which of them a
running daemon applies on ``SIGHUP`` (the rest wait for a restart).

This module only compares; it never applies anything, never logs, and never names a value
(a plan carries key names only: values may be secrets).
"""

from __future__ import annotations

from typing import Any

import msgspec

from hostd.config_schema import Config
from hostd.config_validate import is_struct

# Keys a running daemon applies on SIGHUP (prefixes end in "."); every other changed key is
# reported as needing a restart. docs/operations.md's config reference mirrors this table.
LIVE_KEYS: tuple[str, ...] = (
    "log_level",
    "log.",
    "limits.",
    "allowed_uids",
    "shutdown_grace_s",
    "http.",  # a changed [http] replaces the HTTP client: new calls use the new one
    "model.",
    "auth.",
)


def applies_live(key: str) -> bool:
    return any(key.startswith(p) if p.endswith(".") else key == p for p in LIVE_KEYS)


class ReloadPlan:
    """What changed between two configurations: ``live`` keys the daemon applies now,
    ``restart`` keys that keep their old value until the next start. (A plain class: a
    frozen dataclass or a NamedTuple compiles code at every start, ~1 ms.)"""

    __slots__ = ("live", "restart")

    def __init__(self, live: tuple[str, ...], restart: tuple[str, ...]) -> None:
        self.live = live
        self.restart = restart

    def __repr__(self) -> str:
        return f"ReloadPlan(live={self.live!r}, restart={self.restart!r})"

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart)

    def log_fields(self) -> dict[str, Any]:
        """Fields for the reload's log line (key names only: values may be secrets)."""
        return {"applied": list(self.live), "needs_restart": list(self.restart)}


def reload_plan(old: Config, new: Config) -> ReloadPlan:
    """Which keys differ between ``old`` and ``new``, split into live and restart ones."""
    changed = _diff(old, new, "")
    live = tuple(k for k in changed if applies_live(k))
    restart = tuple(k for k in changed if not applies_live(k))
    return ReloadPlan(live, restart)


def _diff(old: msgspec.Struct, new: msgspec.Struct, prefix: str) -> list[str]:
    out = []
    for f in msgspec.structs.fields(type(old)):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if is_struct(f.type):
            out += _diff(a, b, f"{prefix}{f.name}.")
        elif a != b:
            out.append(prefix + f.name)
    return out
