"""TEST DOUBLE for the C side only: a stand-in for `hostd bridge`, not hostd.

tests/test_bridge.py points hostd-bridge.so at this script through $HOSTD_BIN to test the bridge's
own behaviour (multiplexing, envelopes, streams, relay, restarts, shutdown) before the real
`hostd bridge` exists. It speaks the bridge's side of PROTOCOL.md §15 on stdin/stdout, reads the
hostd block with the real hostd.bridge.spec, and plays a small plugin itself. End-to-end tests
through the real `hostd bridge` replace none of this and belong beside it.

Every line it receives (and what it does) is appended to $FAKE_HOSTD_LOG as JSON lines.

Plugin methods (the `method` of hostd.invoke):
  plugin.register / plugin.reconfigure  a registration result
  echo                                  {"method", "params", "plugin_id", "stream", "timeout_s", "pid"}
  whoami                                {"plugin_id", "pid", "config_yaml", "calls": [methods so far]}
  fail                                  -32000 boom, data {code: plugin_error, http_status: 503, retryable}
  slow                                  no answer until $/cancelRequest (then -32800)
  relay {"method", "params", "cancel"?} sends that host.* request to the bridge, returns its answer
  management.handle                     relays host.model.execute with the plugin's scope id
  executor.execute_stream {"stream_id", "chunks": [b64], "error"?, "hold"?}
                                        a stream S of those chunks (hold: S never ends)
  die                                   exits at once, mid-call
  stop_reading                          answers, then never reads stdin again (a hung hostd)
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
from typing import Any

from hostd.bridge.spec import BridgeConfigError, decode_config_yaml, parse_bridge_spec

out_lock = threading.Lock()
log_lock = threading.Lock()
state_lock = threading.Lock()
LOG = os.environ.get("FAKE_HOSTD_LOG")
ids = itertools.count(1)
pending: dict[str, tuple[threading.Event, list[Any]]] = {}
slow: dict[Any, threading.Event] = {}
streams: dict[str, list[dict[str, Any]]] = {}
stream_events: dict[str, threading.Condition] = {}
closed_streams: set[str] = set()
plugin: dict[str, Any] = {"plugin_id": None, "config_yaml": None, "calls": []}


def log(**entry: Any) -> None:
    if LOG:
        with log_lock, open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), **entry}) + "\n")


def send(message: dict[str, Any]) -> None:
    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    with out_lock:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def answer(rid: Any, result: Any = None, error: dict[str, Any] | None = None) -> None:
    if error is not None:
        send({"jsonrpc": "2.0", "id": rid, "error": error})
    else:
        send({"jsonrpc": "2.0", "id": rid, "result": result})


def call_bridge(method: str, params: Any, cancel: bool = False) -> Any:
    """Sends a request to the bridge (a relayed host call) and waits for its answer."""
    rid = f"hostd-{next(ids)}"
    event = threading.Event()
    box: list[Any] = []
    pending[rid] = (event, box)
    send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
    if cancel:
        send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": rid}})
        log(event="cancel_sent", id=rid)
        return {"cancelled": rid}
    event.wait()
    return box[0]


def invoke(rid: Any, p: dict[str, Any]) -> None:
    method = p.get("method")
    params = p.get("params") or {}
    if p.get("plugin_id") not in (None, plugin["plugin_id"]):
        answer(rid, error={"code": -32000, "message": f"no session for plugin {p.get('plugin_id')}"})
        return
    with state_lock:
        plugin["calls"].append(method)
    if method in ("plugin.register", "plugin.reconfigure"):
        result = {
            "schema_version": 3,
            "metadata": {"name": "fake", "version": "1.0.0", "author": "tests", "github_repository": "x/y"},
            "capabilities": {"executor": True, "management_api": True},
            "seen": params,
        }
        answer(rid, {"result": result})
    elif method == "echo":
        result = {
            "method": method,
            "params": params,
            "plugin_id": p.get("plugin_id"),
            "stream": p.get("stream", False),
            "timeout_s": p.get("timeout_s"),
            "pid": os.getpid(),
        }
        answer(rid, {"result": result})
    elif method == "whoami":
        with state_lock:
            result = {**plugin, "pid": os.getpid()}
        answer(rid, {"result": result})
    elif method == "fail":
        data = {"code": "plugin_error", "http_status": 503, "retryable": True}
        answer(rid, error={"code": -32000, "message": "boom", "data": data})
    elif method == "slow":
        event = threading.Event()
        slow[rid] = event
        event.wait()
        answer(rid, error={"code": -32800, "message": "request cancelled", "data": {"code": "request_cancelled"}})
    elif method == "relay":
        got = call_bridge(params["method"], params.get("params", {}), cancel=params.get("cancel", False))
        answer(rid, {"result": {"answer": got}})
    elif method == "management.handle":
        got = call_bridge("host.model.execute", {"host_callback_id": "proxy-cb-7", "model": "m", "stream": False})
        answer(rid, {"result": {"relayed": got}})
    elif method in ("executor.execute_stream", "server_tool.handle_stream"):
        sid = f"S-{next(ids)}"
        pieces = [{"payload": c, "error": "", "done": False} for c in params.get("chunks", [])]
        if not params.get("hold"):
            pieces.append({"payload": None, "error": params.get("error", ""), "done": True})
        with state_lock:
            streams[sid] = pieces
            stream_events[sid] = threading.Condition(state_lock)
        result: dict[str, Any] = {"result": {"stream": True}, "stream_id": sid}
        if "stream_id" in params:
            result["invoker_stream_id"] = params["stream_id"]
        answer(rid, result)
    elif method == "die":
        log(event="dying")
        os._exit(3)
    elif method == "plugin.shutdown":
        answer(rid, {"result": {}})
    else:
        answer(rid, error={"code": -32601, "message": f"method not found: {method}"})


def stream_read(rid: Any, sid: str) -> None:
    with state_lock:
        if sid not in streams:
            piece: dict[str, Any] = {"payload": None, "error": "", "done": True}
        else:
            cond = stream_events[sid]
            while not streams[sid] and sid not in closed_streams:
                cond.wait()
            if sid in closed_streams:
                piece = {"payload": None, "error": "aborted", "done": True}
            else:
                piece = streams[sid].pop(0)
            if piece["done"]:
                streams.pop(sid, None)
    answer(rid, piece)


def handle(msg: dict[str, Any]) -> None:
    method = msg.get("method")
    rid = msg.get("id")
    p = msg.get("params") or {}
    if method is None:
        entry = pending.pop(str(rid), None)
        if entry is None:
            log(event="unmatched_answer", id=rid)
            return
        entry[1].append(msg.get("result") if "result" in msg else {"error": msg.get("error")})
        entry[0].set()
        return
    if method == "hostd.bridge.start":
        try:
            spec = parse_bridge_spec(decode_config_yaml(p.get("config_yaml")))
        except BridgeConfigError as err:
            answer(rid, error={"code": -32000, "message": str(err), "data": {"code": err.code}})
            return
        with state_lock:
            plugin["plugin_id"] = p.get("plugin_id")
            plugin["config_yaml"] = p.get("config_yaml")
        answer(rid, {"timeout_s": spec.timeout_s})
    elif method == "hostd.invoke":
        invoke(rid, p)
    elif method == "hostd.stream.read":
        stream_read(rid, p.get("stream_id", ""))
    elif method == "hostd.stream.close":
        with state_lock:
            closed_streams.add(p.get("stream_id", ""))
            cond = stream_events.get(p.get("stream_id", ""))
            if cond is not None:
                cond.notify_all()
        answer(rid, {})
    elif method == "$/cancelRequest":
        event = slow.pop(p.get("id"), None)
        if event is not None:
            event.set()
    else:
        answer(rid, error={"code": -32601, "message": f"method not found: {method}"})


def main() -> None:
    log(event="started", argv=sys.argv[1:])
    for raw in sys.stdin.buffer:
        msg = json.loads(raw)
        log(event="recv", msg=msg)
        if (msg.get("params") or {}).get("method") == "stop_reading":
            answer(msg["id"], {"result": {}})
            threading.Event().wait()
        threading.Thread(target=handle, args=(msg,), daemon=True).start()
    log(event="eof")
    os._exit(0)


if __name__ == "__main__":
    main()
