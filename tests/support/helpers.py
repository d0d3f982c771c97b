"""Small helpers many test modules share: base64, plugin connections, reading streams to
their end, real callback scopes, and the sentinel that shows nothing else was answered.

Everything here talks to a real hostd through :class:`hostd.client.Client`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hostd.client import MAX_LINE, Client, RpcError
from tests.support.hostd_proc import HostdProcess

T = 10.0
DONE = {"payload": None, "error": "", "done": True}


def b64(data: bytes | str) -> str:
    """Base64 of ``data`` (a ``str`` is encoded as UTF-8 first)."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(data: str) -> bytes:
    return base64.b64decode(data)


async def error_of(client: Client, method: str, params: dict[str, Any], timeout: float = T) -> RpcError:
    """The error answer of a call that must fail."""
    with pytest.raises(RpcError) as e:
        await client.call(method, params, timeout=timeout)
    return e.value


# Plugin connections -------------------------------------------------------------------------


async def plugin(hp: HostdProcess, plugin_id: str, *, answer_unknown: bool = False) -> tuple[Client, str]:
    """A connection to hostd's plugin socket that said ``hostd.hello`` as ``plugin_id``;
    returns it with its session id. ``answer_unknown`` as in :class:`Client`."""
    assert hp.socket is not None
    reader, writer = await asyncio.open_unix_connection(hp.socket, limit=MAX_LINE)
    client = Client(reader, writer, answer_unknown=answer_unknown)
    hello = await client.call("hostd.hello", {"plugin_id": plugin_id, "schema_version": 3}, timeout=T)
    return client, hello["session"]


async def nothing_answered_before_a_sentinel(client: Client) -> None:
    """Show that hostd sent ``client`` nothing it was not asked for, without waiting for time.

    A ``hostd.hello`` is sent now and must be the next message to arrive. hostd reads a
    session's lines in order and answers hello at once, so an answer to anything read before
    (a framing or envelope error, an answer to a line that should have been dropped) would
    be written first. Messages answered to :meth:`Client.call` never reach this queue.
    """
    rid = f"sentinel-{client.next_id()}"
    await client.send({"jsonrpc": "2.0", "id": rid, "method": "hostd.hello", "params": {}})
    message = await client.read_message(timeout=T)
    assert isinstance(message, dict) and message.get("id") == rid, f"answered before the sentinel: {message}"
    assert "result" in message, message


# Streams ------------------------------------------------------------------------------------


async def read_to_end(client: Client, method: str, stream_id: str, timeout: float = T) -> tuple[bytes, dict[str, Any]]:
    """Read a ``host.http.*`` or ``host.model.*`` stream with ``method`` (its ``stream_read``)
    to its end: every payload joined, and the final read. Each piece is 1..32 KiB and an error
    comes only with the end. ``host.model.stream_read`` answers carry all three keys every
    time; ``host.http.stream_read`` leaves out the empty ones (PROTOCOL §5, §6)."""
    every_key = method.startswith("host.model.")
    data = b""
    while True:
        result: dict[str, Any] = await client.call(method, {"stream_id": stream_id}, timeout=timeout)
        if every_key:
            assert set(result) == {"payload", "error", "done"}, result
        if result.get("done"):
            assert result.get("payload") is None, result
            return data, result
        assert not result.get("error"), result
        piece = unb64(result["payload"])
        assert 1 <= len(piece) <= 32 * 1024
        data += piece


async def read_emit_stream(ctl: Client, stream_id: str, timeout: float = T) -> list[dict[str, Any]]:
    """Every ``hostd.stream.read`` of an emit stream up to and including the one that says done."""
    reads: list[dict[str, Any]] = []
    while not reads or not reads[-1]["done"]:
        reads.append(await ctl.call("hostd.stream.read", {"stream_id": stream_id}, timeout=timeout))
    return reads


# Callback scopes ----------------------------------------------------------------------------

_holds = itertools.count(1)


@dataclass
class HeldScope:
    """A real callback scope: a ``hostd.invoke`` of the plugin, held open by its handler.

    ``id`` is the ``host_callback_id`` hostd put in the invoke's params; the scope ends
    when :meth:`end` lets the plugin answer and the invoke returns.
    """

    id: str
    params: dict[str, Any]
    _release: asyncio.Event
    _invoke: asyncio.Future[Any]

    async def end(self) -> Any:
        """Let the plugin answer; returns the invoke's answer, once the scope has ended."""
        self._release.set()
        async with asyncio.timeout(T):
            return await self._invoke

    @property
    def invoke(self) -> asyncio.Future[Any]:
        """The control side's pending ``hostd.invoke`` call."""
        return self._invoke


async def hold_scope(
    ctl: Client, plugin: Client, plugin_id: str, *, request_id: str | None = None, stream: bool = False
) -> HeldScope:
    """Invoke ``plugin`` (connected as ``plugin_id``) from the control connection ``ctl``
    and hold the call open: returns once the plugin has the scope's id."""
    hold = f"t.hold.{next(_holds)}"
    given: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def held(params: dict[str, Any]) -> dict[str, Any]:
        del plugin.handlers[hold]
        given.set_result(params)
        await release.wait()
        return {}

    plugin.handlers[hold] = held
    request: dict[str, Any] = {"plugin_id": plugin_id, "method": hold, "params": {}, "stream": stream}
    if request_id is not None:
        request["request_id"] = request_id
    invoke = asyncio.ensure_future(ctl.call("hostd.invoke", request, timeout=T))
    async with asyncio.timeout(T):
        done, _ = await asyncio.wait({given, invoke}, return_when=asyncio.FIRST_COMPLETED)
    if given not in done:
        given.cancel()
        await invoke  # raises the invoke's error
        raise AssertionError("hostd.invoke returned without calling the plugin")
    params = given.result()
    return HeldScope(params["host_callback_id"], params, release, invoke)


@contextlib.asynccontextmanager
async def scope_of(hp: HostdProcess, plugin: Client, plugin_id: str) -> AsyncIterator[str]:
    """A real open scope for ``plugin`` for the length of the block; yields its id."""
    async with await hp.connect_control() as ctl:
        scope = await hold_scope(ctl, plugin, plugin_id)
        try:
            yield scope.id
        finally:
            await scope.end()


async def scope_is_open(hp: HostdProcess, scope: str) -> bool:
    """A scope bound to another session refuses this one (-32002); one that is not open is ignored."""
    async with await hp.connect() as probe:
        try:
            await probe.call("host.log", {"message": "scope probe", "host_callback_id": scope}, timeout=T)
        except RpcError as e:
            assert e.code == -32002, e.error
            return True
    return False


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for ``localhost`` (and its key), made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
