"""hostd.client serving hostd's requests, as a plugin written with it does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hostd.client import RpcError
from tests.support.helpers import plugin
from tests.support.hostd_proc import HostdProcess

pytestmark = pytest.mark.anyio


async def test_a_method_without_handler_is_answered_method_not_found(hp: HostdProcess) -> None:
    p, _ = await plugin(hp, "p", answer_unknown=True)
    async with p, await hp.connect_control() as control:
        with pytest.raises(RpcError) as e:
            await control.call("hostd.invoke", {"plugin_id": "p", "method": "nope", "params": {}}, timeout=10)
    assert (e.value.code, e.value.message) == (-32601, "method not found: nope")


async def test_cancel_request_from_hostd_cancels_the_handler(hp: HostdProcess) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(params: dict[str, Any]) -> Any:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    p, _ = await plugin(hp, "p")
    async with p, await hp.connect_control() as control:
        p.handlers["slow"] = slow
        invoke = asyncio.ensure_future(
            control.call(
                "hostd.invoke", {"plugin_id": "p", "method": "slow", "params": {}, "timeout_s": 0.5}, timeout=10
            )
        )
        async with asyncio.timeout(10):
            await started.wait()
        with pytest.raises(RpcError) as e:
            await invoke
        assert e.value.message == "plugin call timed out"
        async with asyncio.timeout(10):
            await cancelled.wait()  # hostd sent $/cancelRequest and the handler was cancelled
