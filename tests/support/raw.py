"""A raw line client for hostile-input tests: send any bytes, read answers line by line."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

MAX_LINE = 256 * 1024 * 1024


class RawConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: str) -> RawConn:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_json(self, message: Any) -> None:
        await self.send(orjson.dumps(message) + b"\n")

    async def line(self, timeout: float = 10.0) -> Any:
        """The next answer line, decoded; ``EOFError`` when hostd closed the connection."""
        async with asyncio.timeout(timeout):
            data = await self.reader.readline()
        if not data:
            raise EOFError("connection closed")
        return orjson.loads(data)

    async def call(self, method: str, params: Any = None, rid: Any = "sentinel", timeout: float = 10.0) -> Any:
        """Send one request and return its answer, asserting nothing else came first."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        await self.send_json(message)
        answer = await self.line(timeout)
        assert answer.get("id") == rid, answer
        return answer

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def __aenter__(self) -> RawConn:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def hello_ok(path: str, timeout: float = 10.0) -> None:
    """A fresh neighbour session answers ``hostd.hello``: the daemon is alive and serving."""
    async with await RawConn.open(path) as conn:
        answer = await conn.call("hostd.hello", {}, timeout=timeout)
        assert answer["result"]["server"] == "hostd", answer
