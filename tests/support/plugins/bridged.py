"""A JSON-RPC plugin for the proxy-bridge end-to-end tests (tests/test_bridge_e2e.py).

Its id comes from argv[1] (the bridge names the plugin after its .so file). Methods:
  plugin.register / plugin.reconfigure  echoes what it was sent, and how often
  management.handle                     host.model.execute with its host_callback_id; returns the answer
  executor.execute_stream {"chunks"}    emits each chunk (base64 strings) to stream_id, then closes
  open_stream {"url"}                   host.http.do_stream, leaves the stream open, returns its id
  whoami                                {"pid", "registrations"}
  die                                   exits at once (mid-call)
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "plugins" / "python"))
from hostd_plugin import Emitter, Plugin

plugin = Plugin(sys.argv[1] if len(sys.argv) > 1 else "bridged")
registrations: list[dict[str, Any]] = []


@plugin.method("plugin.register")
async def register(params: dict[str, Any]) -> dict[str, Any]:
    registrations.append(params)
    return {"schema_version": 3, "metadata": {"Name": "bridged"}, "seen": params, "count": len(registrations)}


plugin.method("plugin.reconfigure")(register)


@plugin.method("management.handle")
async def handle(params: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"model": "m", "messages": []}).encode()
    answer = await plugin.model_execute("openai", "m", body, host_callback_id=str(params["host_callback_id"]))
    return {"model_status": answer.status_code, "model_body": answer.text()}


@plugin.stream_method("executor.execute_stream")
async def execute_stream(params: dict[str, Any], out: Emitter) -> None:
    for chunk in params.get("chunks", []):
        await out.emit(base64.b64decode(chunk))


@plugin.method("open_stream")
async def open_stream(params: dict[str, Any]) -> dict[str, Any]:
    stream = await plugin.http_do_stream(str(params["url"]))
    return {"stream_id": stream.stream_id}


@plugin.method("whoami")
async def whoami(params: dict[str, Any]) -> dict[str, Any]:
    return {"pid": os.getpid(), "registrations": len(registrations)}


@plugin.method("die")
async def die(params: dict[str, Any]) -> dict[str, Any]:
    os._exit(3)


if __name__ == "__main__":
    plugin.run()
