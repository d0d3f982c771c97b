"""Requests hostd sends to the peer of a session (``hostd.invoke`` reaching a plugin).

Ids are strings ``hostd-<n>``; answers are matched by id. An answer nobody waits for is
dropped with a debug line that does not repeat its content. When the session ends every
pending call fails ``plugin disconnected`` (retryable).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import orjson

from hostd.errors import HostCallFailed, RemoteError
from hostd.rpc.messages import Envelope, encode_request

CANCEL_METHOD = "$/cancelRequest"


class PeerCalls:
    __slots__ = ("_closed", "_log_unmatched", "_pending", "_seq", "_write")

    def __init__(self, write: Callable[[bytes], None], log_unmatched: Callable[[object], None]) -> None:
        self._write = write
        self._log_unmatched = log_unmatched
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._seq = itertools.count(1)
        self._closed = False

    def __len__(self) -> int:
        return len(self._pending)

    async def call(self, method: str, params: Any, timeout_s: float | None = None) -> Any:
        """Send a request and wait for its answer (the raw ``result``).

        Raises :class:`RemoteError` with the peer's error object, ``TimeoutError``, or
        :class:`HostCallFailed` ``plugin disconnected`` when the session ends first. On a
        timeout or cancellation the peer is sent ``$/cancelRequest``.
        """
        if self._closed:
            raise disconnected()
        rid = f"hostd-{next(self._seq)}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._write(encode_request(rid, method, params))
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        except (TimeoutError, asyncio.CancelledError):
            # Cancelling the await cancels ``fut`` too: only an answered call needs no cancel.
            if (fut.cancelled() or not fut.done()) and not self._closed:
                self._write(encode_request(None, CANCEL_METHOD, {"id": rid}))
            raise
        finally:
            self._pending.pop(rid, None)

    def notify(self, method: str, params: Any) -> None:
        self._write(encode_request(None, method, params))

    def answer(self, env: Envelope) -> None:
        """An incoming message with ``result`` or ``error`` and no ``method``."""
        rid = env.id
        fut = self._pending.get(rid) if isinstance(rid, str) else None
        if fut is None or fut.done():
            self._log_unmatched(rid if isinstance(rid, int | str) else None)
            return
        if env.error:
            try:
                error = orjson.loads(bytes(env.error))
            except orjson.JSONDecodeError:
                error = None
            if not isinstance(error, dict):
                error = {"code": -32000, "message": "invalid error object from plugin"}
            fut.set_exception(RemoteError(error))
        else:
            fut.set_result(env.result)

    def answer_unreadable(self) -> None:
        """An answer whose id could not be read: nobody waits for it."""
        self._log_unmatched(None)

    def close(self) -> None:
        """No more calls; every pending one fails ``plugin disconnected``."""
        self._closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(disconnected())
        self._pending.clear()


def disconnected() -> HostCallFailed:
    return HostCallFailed("plugin disconnected", retryable=True, data_code="plugin_unavailable")
