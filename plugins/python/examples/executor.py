"""The executor example: streams a model's answer back to the host side through an emit stream.

The host side invokes ``executor.execute_stream`` with ``stream: true`` (hostd adds
``host_callback_id`` and ``stream_id``)::

    hostd invoke --stream --plugin demo-executor-python executor.execute_stream \
        '{"model": "gpt-4o-mini", "prompt": "Say hello"}'

The plugin answers ``{}`` at once (the host side learns the stream id from that answer), then,
in the background, opens ``host.model.execute_stream`` (OpenAI chat completions, ``stream:
true``, under the call's ``host_callback_id``), reads every piece with
``host.model.stream_read`` and emits each one unchanged with ``host.stream.emit``; at the end it
calls ``host.stream.close``, and on an error ``host.stream.close`` with the error's text.
``Plugin.stream_method`` does the answering, the closing and the error path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

try:
    from hostd_plugin import Emitter, Plugin
except ImportError:  # run from a checkout, without `pip install ./plugins/python`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hostd_plugin import Emitter, Plugin

PLUGIN_ID = "demo-executor-python"
plugin = Plugin(PLUGIN_ID)


@plugin.stream_method("executor.execute_stream")
async def execute_stream(params: dict[str, Any], out: Emitter) -> None:
    model = str(params["model"])
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": str(params["prompt"])}]}
    async with plugin.model_execute_stream(
        "openai", model, json.dumps(body).encode(), host_callback_id=str(params.get("host_callback_id", ""))
    ) as answer:
        async for piece in answer:  # host.model.stream_read until done; an error raises StreamError
            await out.emit(piece)
    # Returning closes the stream (host.stream.close); an exception closes it with its text.


if __name__ == "__main__":
    plugin.run()
