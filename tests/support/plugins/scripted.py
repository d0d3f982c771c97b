"""A plugin process for tests, built on plugins/python/hostd_plugin.py.

It connects to ``$HOSTD_SOCKET`` (or serves on stdio under ``hostd run``), says hello as
``--id`` (default ``scripted``), prints ``READY <pid>`` on stdout once the hello is
answered (socket mode only: on stdio, stdout is the protocol), and serves ``t.*`` methods
that let a test steer it and observe what it saw. Options: ``--exit N`` exits with N right
after the hello; ``--kill-self SIG`` kills itself with signal SIG; ``--ignore-sigterm``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "plugins" / "python"))

from hostd_plugin import Plugin, RpcError


class Producer:
    """One background emitter: how many emits it sent, how many were answered, how it ended."""

    def __init__(self) -> None:
        self.sent = 0
        self.answered = 0
        self.error: str | None = None
        self.done = False
        self.changed = asyncio.Condition()

    async def bump(self, **changes: Any) -> None:
        async with self.changed:
            for key, value in changes.items():
                setattr(self, key, value)
            self.changed.notify_all()

    def state(self) -> dict[str, Any]:
        return {"sent": self.sent, "answered": self.answered, "error": self.error, "done": self.done}


def build(plugin_id: str) -> Plugin:
    plugin = Plugin(plugin_id)
    producers: dict[str, Producer] = {}
    cancelled: list[str] = []
    cancel_seen = asyncio.Event()

    @plugin.method("t.pid")
    async def pid(params: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid()}

    @plugin.method("t.echo")
    async def echo(params: dict[str, Any]) -> dict[str, Any]:
        return {"params": params}

    @plugin.method("t.fail")
    async def fail(params: dict[str, Any]) -> dict[str, Any]:
        raise RpcError(params.get("code", -32099), params.get("message", "boom"), params.get("data"))

    @plugin.method("t.hang")
    async def hang(params: dict[str, Any]) -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(str(params.get("tag", "")))
            cancel_seen.set()
            raise
        return {}

    @plugin.method("t.cancelled")
    async def was_cancelled(params: dict[str, Any]) -> dict[str, Any]:
        await cancel_seen.wait()
        return {"cancelled": cancelled}

    @plugin.method("t.stream")
    async def stream(params: dict[str, Any]) -> dict[str, Any]:
        """Emit ``count`` chunks ``<prefix><i>`` from a background task, then close (or crash)."""
        stream_id = params["stream_id"]
        count = int(params.get("count", 10))
        prefix = str(params.get("prefix", "chunk-"))
        crash_after = params.get("crash_after")
        error_at = params.get("error_at")
        close = params.get("close", True)
        close_error = str(params.get("close_error", ""))
        exit_after_close = params.get("exit_after_close")
        producer = producers[stream_id] = Producer()

        async def produce() -> None:
            try:
                for i in range(count):
                    if crash_after is not None and i == crash_after:
                        os._exit(7)  # a crash: no close, no goodbye
                    await producer.bump(sent=i + 1)
                    error = "emitted error" if error_at == i else ""
                    await plugin.emit(stream_id, f"{prefix}{i}".encode(), error=error)
                    await producer.bump(answered=i + 1)
                if close:
                    await plugin.close_stream(stream_id, error=close_error)
                if exit_after_close is not None:
                    os._exit(exit_after_close)  # gone right after closing: what it queued must survive
            except RpcError as e:
                await producer.bump(error=e.message)
            finally:
                await producer.bump(done=True)

        plugin.spawn(produce())
        if params.get("answer_after_s"):
            await asyncio.sleep(float(params["answer_after_s"]))  # a slow executor, not synchronisation
        return {"accepted": True, "host_callback_id": params.get("host_callback_id")}

    @plugin.method("t.wait_blocked")
    async def wait_blocked(params: dict[str, Any]) -> dict[str, Any]:
        """Wait until emit number ``n`` was sent and not answered, then make another call."""
        producer = producers[params["stream_id"]]
        n = int(params["n"])
        async with producer.changed:
            await producer.changed.wait_for(lambda: producer.sent >= n and producer.answered == n - 1)
        hello = await plugin.call("hostd.hello", {"plugin_id": plugin.plugin_id, "schema_version": 3})
        return {"hello_session": hello["session"], **producer.state()}

    @plugin.method("t.producer")
    async def producer_state(params: dict[str, Any]) -> dict[str, Any]:
        """The producer's state once it has ended."""
        producer = producers[params["stream_id"]]
        async with producer.changed:
            await producer.changed.wait_for(lambda: producer.done)
        return producer.state()

    @plugin.method("t.emit")
    async def emit_raw(params: dict[str, Any]) -> dict[str, Any]:
        """One ``host.stream.emit`` with the given params, answered with hostd's answer."""
        try:
            return {"result": await plugin.call("host.stream.emit", params.get("emit", {}))}
        except RpcError as e:
            return {"error": e.to_error()}

    @plugin.method("t.inline")
    async def inline(params: dict[str, Any]) -> dict[str, Any]:
        """Emit ``emit_first`` chunks, then answer with inline ``chunks``."""
        for i in range(int(params.get("emit_first", 0))):
            await plugin.emit(params["stream_id"], f"emitted-{i}".encode())
        chunks = []
        for item in params["chunks"]:
            chunk: dict[str, Any] = {"Payload": base64.b64encode(item[0].encode()).decode()}
            if len(item) > 1:
                chunk["Err"] = item[1]
            chunks.append(chunk)
        return {"ok": True, "chunks": chunks}

    return plugin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", default="scripted")
    parser.add_argument("--exit", type=int, default=None)
    parser.add_argument("--kill-self", type=int, default=None)
    parser.add_argument("--ignore-sigterm", action="store_true")
    args = parser.parse_args()
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    plugin = build(args.id)
    socket_mode = bool(os.environ.get("HOSTD_SOCKET"))

    def ready() -> None:
        print(f"plugin {args.id} ready, pid {os.getpid()}", file=sys.stderr, flush=True)
        if socket_mode:
            print(f"READY {os.getpid()}", flush=True)
        if args.exit is not None:
            os._exit(args.exit)
        if args.kill_self is not None:
            os.kill(os.getpid(), args.kill_self)

    asyncio.run(plugin.serve(ready=ready))


if __name__ == "__main__":
    main()
