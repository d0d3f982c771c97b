"""The fake proxy of the model tests (``tests/support/fake_proxy.py``) in its own process.

Streaming chat completions for a model named ``bench-N`` answer ``N`` OpenAI-style chunk
events (each written as its own HTTP chunk, as the proxy relays tokens) and ``data: [DONE]``;
everything else is the fake proxy's default behaviour. Prints ``{"port": N}`` once
listening and serves until its stdin closes. Run as ``python -m bench.fake_proxy_server``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

from tests.support.fake_proxy import Answer, FakeProxy, Received, Sse, sse_event


def bench_events(count: int, model: str) -> list[bytes]:
    chunk = [
        sse_event(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": {"content": f"tok{i % 100:02d} "}, "finish_reason": None}],
            }
        )
        for i in range(min(count, 100))
    ]
    return [chunk[i % len(chunk)] for i in range(count)] + [b"data: [DONE]\n\n"]


class BenchProxy(FakeProxy):
    def _choose(self, request: Received) -> Answer:
        try:
            payload: Any = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            payload = None
        model = str(payload.get("model", "")) if isinstance(payload, dict) else ""
        if request.path == "/v1/chat/completions" and model.startswith("bench-") and payload.get("stream") is True:
            self.received.clear()  # keep memory flat over many runs
            self.exchanges.clear()
            return Sse(bench_events(int(model.removeprefix("bench-")), model))
        return super()._choose(request)


async def main() -> None:
    proxy = await BenchProxy().start()
    sys.stdout.buffer.write(orjson.dumps({"port": proxy.port}) + b"\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()  # until stdin closes
    await proxy.stop()


if __name__ == "__main__":
    asyncio.run(main())
