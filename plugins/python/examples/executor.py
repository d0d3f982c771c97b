"""An example executor plugin: answers ``executor.execute_stream`` at once and streams from a task.

Run it under hostd as the proxy would::

    hostd run --control unix:/run/hostd/control.sock --name example-executor -- \
        python plugins/python/examples/executor.py

or let it connect to a running ``hostd serve --listen unix:PATH`` with ``HOSTD_SOCKET=unix:PATH``.

Methods (what the host side sends through ``hostd.invoke``):

- ``executor.execute {"prompt": str}`` → ``{"text": "echo: <prompt>"}``, logging through
  ``host.log`` under the call's ``host_callback_id``.
- ``executor.execute_stream {"count": int = 100, "prompt": str}`` → ``{"accepted": true}`` at
  once; then ``count`` chunks ``"<i> <prompt>\\n"`` are emitted to ``stream_id`` from a
  background task, and the stream is closed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hostd_plugin import Plugin, RpcError

plugin = Plugin("example-executor")


@plugin.method("executor.execute")
async def execute(params: dict[str, Any]) -> dict[str, Any]:
    prompt = str(params.get("prompt", ""))
    await plugin.log("execute", host_callback_id=params.get("host_callback_id", ""), prompt_chars=len(prompt))
    return {"text": f"echo: {prompt}"}


@plugin.method("executor.execute_stream")
async def execute_stream(params: dict[str, Any]) -> dict[str, Any]:
    stream_id = params["stream_id"]
    count = int(params.get("count", 100))
    prompt = str(params.get("prompt", ""))

    async def produce() -> None:
        try:
            for i in range(count):
                await plugin.emit(stream_id, f"{i} {prompt}\n".encode())
        except RpcError as e:  # the host side closed the stream: stop producing
            print(f"stream {stream_id} ended early: {e.message}", file=sys.stderr)
            return
        await plugin.close_stream(stream_id)

    # Answer first: the host learns the stream id from this answer, and at most 16 chunks
    # can wait unread before that.
    plugin.spawn(produce())
    return {"accepted": True}


if __name__ == "__main__":
    plugin.run()
