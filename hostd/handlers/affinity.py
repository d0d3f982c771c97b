"""``host.affinity.lookup`` (CLIProxyAPI v7.2.156; PROTOCOL.md §13).

Standalone, hostd has no auth manager and answers what the proxy answers without one:
``{"status": "unsupported", "observed_at": <now>}``. With a bridge that relays the
``affinity`` family, the call goes to the proxy instead and never reaches this handler.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from hostd.errors import HostCallFailed
from hostd.rpc.methods import CallContext, host_method


class AffinityLookupParams(msgspec.Struct, frozen=True, kw_only=True):
    provider: str = ""
    model: str = ""
    session_id: str = ""


def rfc3339_nano(ns: int) -> str:
    """A UTC time as Go's ``time.RFC3339Nano`` writes it: nanoseconds, trailing zeros trimmed."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


@host_method("host.affinity.lookup", AffinityLookupParams, "host affinity lookup", inline=True)
def affinity_lookup(ctx: CallContext, params: AffinityLookupParams) -> dict[str, Any]:
    for name, value in (("provider", params.provider), ("model", params.model), ("session_id", params.session_id)):
        if not value.strip():
            raise HostCallFailed(f"{name} is required")
    return {"status": "unsupported", "observed_at": rfc3339_nano(time.time_ns())}


METHODS = (affinity_lookup,)
