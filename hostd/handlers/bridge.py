"""``hostd.bridge.start``: the proxy bridge (hostd-bridge.so) asks ``hostd bridge`` to start its plugin.

Served only on the stdio control session of ``hostd bridge`` (PROTOCOL §15). The work is done
by :class:`hostd.bridge.host.BridgeHost`; this module decodes and answers.
"""

from __future__ import annotations

from typing import Any

import msgspec

from hostd.errors import HostCallFailed
from hostd.rpc.methods import CallContext, host_method


class StartParams(msgspec.Struct, frozen=True, kw_only=True):
    plugin_id: str = ""
    config_yaml: str = ""


@host_method("hostd.bridge.start", StartParams, "hostd.bridge.start")
async def bridge_start(ctx: CallContext, params: StartParams) -> dict[str, Any]:
    bridge = getattr(ctx.services, "bridge", None)
    if bridge is None:  # pragma: no cover - the method is only in hostd bridge's table
        raise HostCallFailed("hostd: not running as hostd bridge", data_code="invalid_config")
    return await bridge.start(params.plugin_id, params.config_yaml)  # type: ignore[no-any-return]


METHODS = (bridge_start,)
