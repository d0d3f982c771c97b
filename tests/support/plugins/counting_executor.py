"""A counting executor plugin for the emit-bridge and ``hostd run`` tests (the first example executor).

Plugin id ``example-executor``. Methods (what the host side sends through ``hostd.invoke``):

- ``executor.execute {"prompt": str}`` → ``{"text": "echo: <prompt>"}``, logging through
  ``host.log`` under the call's ``host_callback_id``.
- ``executor.execute_stream {"count": int = 100, "prompt": str}`` → ``{"accepted": true}`` at
  once; then ``count`` chunks ``"<i> <prompt>\\n"`` are emitted to ``stream_id`` from a
  producer, and the stream is closed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "plugins" / "python"))

from hostd_plugin import Emitter, Plugin

plugin = Plugin("example-executor")


@plugin.method("executor.execute")
async def execute(params: dict[str, Any]) -> dict[str, Any]:
    prompt = str(params.get("prompt", ""))
    await plugin.log(
        "execute", fields={"prompt_chars": len(prompt)}, host_callback_id=str(params.get("host_callback_id", ""))
    )
    return {"text": f"echo: {prompt}"}


@plugin.method("executor.execute_stream")
async def execute_stream(params: dict[str, Any]) -> dict[str, Any]:
    count = int(params.get("count", 100))
    prompt = str(params.get("prompt", ""))

    async def produce(out: Emitter) -> None:
        for i in range(count):
            await out.emit(f"{i} {prompt}\n".encode())

    # Answer first: the host learns the stream id from this answer, and at most 16 chunks
    # can wait unread before that.
    plugin.produce(str(params["stream_id"]), produce)
    return {"accepted": True}


if __name__ == "__main__":
    plugin.run()
