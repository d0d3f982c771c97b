"""An example plugin: logs, fetches a URL with host.http.do, then streams one with do_stream.

Run it against a hostd socket: ``HOSTD_SOCKET=unix:/tmp/hostd.sock python fetch_plugin.py URL``.
It uses only hostd's client module; the payloads are the native host's, so the same calls
work from a plugin loaded in-process by CLIProxyAPI.
"""

from __future__ import annotations

import asyncio
import base64
import sys

from hostd.client import Client


async def main(base_url: str) -> None:
    async with await Client.connect() as host:
        hello = await host.call("hostd.hello", {"plugin_id": "fetch-example", "schema_version": 3})
        print(f"connected to {hello['server']} {hello['version']} as session {hello['session']}")

        await host.call("host.log", {"level": "info", "message": "fetch plugin started", "fields": {"url": base_url}})

        page = await host.call("host.http.do", {"method": "GET", "url": base_url + "/hello"})
        body = base64.b64decode(page["Body"]).decode()
        print(f"host.http.do       -> {page['StatusCode']} {body!r}")

        opened = await host.call("host.http.do_stream", {"url": base_url + "/events"})
        print(f"host.http.do_stream -> {opened['status_code']}, stream {opened['stream_id'][:8]}…")
        while True:
            piece = await host.call("host.http.stream_read", {"stream_id": opened["stream_id"]})
            if piece.get("done"):
                print("stream_read        -> done" + (f" (error: {piece['error']})" if piece.get("error") else ""))
                break
            print(f"stream_read        -> {base64.b64decode(piece['payload']).decode().strip()!r}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
