"""``hostd invoke``: call a method on a plugin from the control socket, streams included.

One control connection for the whole command: ``hostd.invoke`` and, for ``--stream``, every
``hostd.stream.read`` of the emit stream it opened (an emit stream belongs to the control
session that invoked it and is aborted when that session ends, so ``hostd call`` cannot read
one). Without ``--stream`` the plugin's result is printed as JSON on stdout. With ``--stream``
the result goes to stderr as one line and each chunk's payload is written to stdout, decoded,
as it arrives.

Exit codes: 0 on success; 1 on a JSON-RPC error, a stream that ends with an error, no answer
within the timeout, or hostd closing the connection; 2 on bad arguments or when it cannot
connect. Not part of the public Python API (the command line is).
"""

from __future__ import annotations

import asyncio
import base64
import sys
from typing import Any, BinaryIO, TextIO

import orjson

from hostd.client import Client, ConnectionClosed, RpcError

ANSWER_SLACK_S = 5.0  # hostd answers "plugin call timed out" itself at timeout_s; wait a little longer


def invoke(
    address: str,
    plugin_id: str,
    method: str,
    params_json: str | None = None,
    *,
    stream: bool = False,
    timeout: float | None = None,
    out: BinaryIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``hostd invoke`` and return its exit code."""
    out = out or sys.stdout.buffer
    err = err or sys.stderr
    if not address:
        print("hostd invoke: no control socket (pass --control unix:PATH or set HOSTD_CONTROL)", file=err)
        return 2
    params: Any = {}
    if params_json is not None:
        try:
            params = orjson.loads(params_json)
        except orjson.JSONDecodeError as e:
            print(f"hostd invoke: PARAMS is not valid JSON: {e}", file=err)
            return 2
        if not isinstance(params, dict):
            print("hostd invoke: PARAMS must be a JSON object", file=err)
            return 2
    if timeout is not None and timeout <= 0:
        print("hostd invoke: --timeout must be a positive number of seconds", file=err)
        return 2
    request: dict[str, Any] = {"plugin_id": plugin_id, "method": method, "params": params, "stream": stream}
    if timeout is not None:
        request["timeout_s"] = timeout
    return asyncio.run(_invoke(address, request, timeout, out, err))


async def _invoke(address: str, request: dict[str, Any], timeout: float | None, out: BinaryIO, err: TextIO) -> int:
    try:
        client = await Client.connect(address)
    except (OSError, ValueError) as e:
        print(f"hostd invoke: cannot connect to {address}: {e}", file=err)
        return 2
    async with client:
        try:
            wait = None if timeout is None else timeout + ANSWER_SLACK_S
            answer = await client.call("hostd.invoke", request, timeout=wait)
            if not request["stream"]:
                out.write(orjson.dumps(answer.get("result"), option=orjson.OPT_INDENT_2) + b"\n")
                out.flush()
                return 0
            print(orjson.dumps(answer.get("result")).decode(), file=err, flush=True)
            return await _read_stream(client, str(answer["stream_id"]), timeout, out, err)
        except RpcError as e:
            print(orjson.dumps({"error": e.error}).decode(), file=err)
            return 1
        except TimeoutError:
            print("hostd invoke: no answer within the timeout", file=err)
            return 1
        except ConnectionClosed:
            print("hostd invoke: hostd closed the connection", file=err)
            return 1


async def _read_stream(client: Client, stream_id: str, timeout: float | None, out: BinaryIO, err: TextIO) -> int:
    """Read the emit stream until it is done, writing each payload as it arrives."""
    while True:
        try:
            piece = await client.call("hostd.stream.read", {"stream_id": stream_id}, timeout=timeout)
        except TimeoutError:
            await client.call("hostd.stream.close", {"stream_id": stream_id}, timeout=ANSWER_SLACK_S)
            print(f"hostd invoke: no chunk within {timeout:g} s; stream closed", file=err)
            return 1
        if piece.get("payload"):
            out.write(base64.b64decode(piece["payload"]))
            out.flush()
        if piece.get("error"):
            print(f"hostd invoke: stream error: {piece['error']}", file=err)
            return 1
        if piece.get("done"):
            return 0
