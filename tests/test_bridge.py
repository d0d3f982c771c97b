"""hostd-bridge.so (PROTOCOL.md §15), loaded as CLIProxyAPI's loader loads it.

tests/bridge/harness.c does what internal/pluginhost/loader_unix.go does (dlopen with
RTLD_NOW|RTLD_LOCAL, cliproxy_plugin_init with a host table of ABI 1, call / free_buffer /
shutdown from many threads) and records the host.* calls the bridge makes. Behind the bridge,
$HOSTD_BIN points to tests/bridge/fake_hostd_bridge.py: a TEST DOUBLE of `hostd bridge` for the C
side only. End-to-end tests through the real `hostd bridge` live beside the lead's implementation.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import b64

ROOT = Path(__file__).resolve().parent.parent
BRIDGE_SRC = ROOT / "hostd" / "bridge" / "hostd_bridge.c"
HARNESS_SRC = ROOT / "tests" / "bridge" / "harness.c"
PEER = ROOT / "tests" / "bridge" / "fake_hostd_bridge.py"
STRICT = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
ASAN = ["-g", "-O1", "-fsanitize=address", "-fno-omit-frame-pointer"]

BLOCK = "enabled: true\npriority: 1\nhostd:\n    command: [python3, /opt/plugin.py]\n    timeout_s: 30\napi_key: sk-x\n"


def register_params(block: str = BLOCK) -> dict[str, Any]:
    return {"config_yaml": b64(block), "schema_version": 3}


def cc(*args: str | Path) -> None:
    proc = subprocess.run(["cc", *map(str, args)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@dataclass(frozen=True)
class Build:
    bridge: Path
    bridge_asan: Path
    harness: Path
    harness_asan: Path


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    out = tmp_path_factory.mktemp("bridge-build")
    b = Build(out / "bridge.so", out / "bridge-asan.so", out / "harness", out / "harness-asan")
    cc(*STRICT, "-O2", "-fPIC", "-shared", "-o", b.bridge, BRIDGE_SRC, "-lpthread")
    cc(*STRICT, *ASAN, "-fPIC", "-shared", "-o", b.bridge_asan, BRIDGE_SRC, "-lpthread")
    cc(*STRICT, "-O1", "-o", b.harness, HARNESS_SRC, "-ldl", "-lpthread")
    cc(*STRICT, *ASAN, "-o", b.harness_asan, HARNESS_SRC, "-ldl", "-lpthread")
    return b


class Harness:
    """One harness process: commands in, events out (collected by a reader thread)."""

    def __init__(self, exe: Path, env: dict[str, str], stderr: Path) -> None:
        self._stderr = stderr.open("wb")
        self.proc = subprocess.Popen(
            [str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        self.stderr_path = stderr
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self.events.append({"event": "harness_eof"})
            self._cond.notify_all()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if pred(event):
                        return event
                if any(e["event"] == "harness_eof" for e in self.events):
                    raise AssertionError(f"harness ended; stderr:\n{self.stderr_path.read_text()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such event within {timeout}s; events: {self.events[-10:]}")
                self._cond.wait(left)

    def event(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait_for(lambda e: e["event"] == name, timeout)

    def answer(self, tag: str, timeout: float = 60.0) -> dict[str, Any]:
        event = self.wait_for(lambda e: e["event"] == "answer" and e["tag"] == tag, timeout)
        assert event["rc"] == 0, event
        envelope: dict[str, Any] = json.loads(event["body"])
        return envelope

    def call(self, tag: str, method: str, params: dict[str, Any] | str, timeout: float = 60.0) -> dict[str, Any]:
        text = params if isinstance(params, str) else json.dumps(params, separators=(",", ":"))
        self.send(f"call {tag} {method} {text}")
        return self.answer(tag, timeout)

    def sentinel(self, text: str) -> None:
        """Round trip through the harness: everything it printed before is in self.events."""
        self.send(f"echo {text}")
        self.wait_for(lambda e: e["event"] == "echo" and e["text"] == text)

    def host_calls(self, method: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            calls = [e for e in self.events if e["event"] == "host_call"]
        return [c for c in calls if method is None or c["method"] == method]

    def children(self) -> list[int]:
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except FileNotFoundError:  # a thread that ended while we looked
                continue
        return pids

    def close(self) -> int:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return rc


@dataclass
class World:
    tmp: Path
    build: Build
    env: dict[str, str]
    log: Path
    harnesses: list[Harness]

    def plugin(self, name: str = "my-plugin.so", asan: bool = False) -> Path:
        """A copy of the bridge under a plugin file name, as the operator installs it."""
        path = self.tmp / "plugins" / name
        path.parent.mkdir(exist_ok=True)
        shutil.copyfile(self.build.bridge_asan if asan else self.build.bridge, path)
        return path

    def harness(self, asan: bool = False, **env: str) -> Harness:
        h = Harness(
            self.build.harness_asan if asan else self.build.harness,
            {**self.env, **env},
            self.tmp / f"harness-{len(self.harnesses)}.stderr",
        )
        self.harnesses.append(h)
        return h

    def loaded(self, name: str = "my-plugin.so", asan: bool = False, **env: str) -> Harness:
        h = self.harness(asan=asan, **env)
        h.send(f"load {self.plugin(name, asan=asan)}")
        loaded = h.event("loaded")
        assert loaded["rc"] == 0, loaded
        return h

    def registered(self, block: str = BLOCK, **kw: Any) -> Harness:
        h = self.loaded(**kw)
        envelope = h.call("register", "plugin.register", register_params(block))
        assert envelope["ok"] is True, envelope
        return h

    def peer_log(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def received(self, method: str | None = None) -> list[dict[str, Any]]:
        msgs = [e["msg"] for e in self.peer_log() if e["event"] == "recv"]
        return [m for m in msgs if method is None or m.get("method") == method]

    def wait_log(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0) -> list[dict[str, Any]]:
        """Waits (bounded) for the peer's log to show something the harness cannot see."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.peer_log()
            if pred(entries):
                return entries
            assert time.monotonic() < deadline, f"peer log never matched; last entries: {entries[-5:]}"
            time.sleep(0.02)


@pytest.fixture
def world(tmp_path: Path, build: Build) -> Iterator[World]:
    hostd = tmp_path / "hostd"
    hostd.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{PEER}" "$@"\n')
    hostd.chmod(0o755)
    log = tmp_path / "peer.jsonl"
    env = {**os.environ, "HOSTD_BIN": str(hostd), "FAKE_HOSTD_LOG": str(log), "ASAN_OPTIONS": "detect_leaks=1"}
    w = World(tmp_path, build, env, log, [])
    yield w
    for h in w.harnesses:
        h.close()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- building and loading ----------------------------------------------------------------------


def test_make_bridge_builds_the_library_with_the_hostd_path_compiled_in(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["make", "-s", "bridge", "HOSTD=/opt/compiled-in/hostd"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    lib = ROOT / "build" / "hostd-bridge.so"
    assert b"/opt/compiled-in/hostd" in lib.read_bytes()
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    exported = [line.split()[-1] for line in symbols.stdout.splitlines() if " T " in line]
    assert exported == ["cliproxy_plugin_init"]
    needed = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    libs = sorted(line.split("[")[1].rstrip("]") for line in needed.splitlines() if "(NEEDED)" in line)
    assert set(libs) <= {"libc.so.6", "libpthread.so.0"}


def test_init_only_stores_the_host_table(world: World) -> None:
    h = world.loaded()
    h.sentinel("after-init")
    assert h.children() == []
    assert world.peer_log() == []


def test_shutdown_with_nothing_started_returns_and_the_library_unloads(world: World) -> None:
    h = world.loaded(asan=True)
    h.send("shutdown")
    h.event("shutdown")
    h.send("close")
    h.event("closed")
    assert h.close() == 0
    assert "ERROR" not in h.stderr_path.read_text()
    assert world.peer_log() == []


def test_a_second_init_in_one_process_returns_1_and_says_why(world: World) -> None:
    h = world.loaded()
    h.send("init2")
    second = h.event("init2")
    assert second["rc"] == 1
    assert second["filled"] is False  # the proxy would call a filled-in shutdown after a failed init
    link = world.tmp / "plugins" / "other.so"
    link.symlink_to(world.tmp / "plugins" / "my-plugin.so")
    h.send(f"init2 {link}")
    via_link = h.wait_for(lambda e: e["event"] == "init2" and e is not second)
    assert via_link["rc"] == 1
    assert via_link["same_handle"] is True
    h.sentinel("done")
    assert "each plugin needs its own copy" in h.stderr_path.read_text()
    # The first instance still works.
    assert h.call("r", "plugin.register", register_params())["ok"] is True


@pytest.mark.parametrize(
    ("file_name", "plugin_id"),
    [
        ("my-plugin-v1.2.0.so", "my-plugin"),
        ("x-vnext.so", "x-vnext"),
        ("Shouty.SO", "Shouty"),
        ("a-v1-v2.so", "a-v1"),
        ("p-v.so", "p-v"),
        ("tool-v2+build.7.so", "tool"),
        ("lib.name_x.so", "lib.name_x"),
    ],
)
def test_the_plugin_id_comes_from_the_file_name(world: World, file_name: str, plugin_id: str) -> None:
    h = world.registered(name=file_name)
    assert h.call("w", "whoami", {})["result"]["plugin_id"] == plugin_id
    start = world.received("hostd.bridge.start")[0]
    assert start["params"]["plugin_id"] == plugin_id


@pytest.mark.parametrize("file_name", ["-bad.so", "_x.so", "sp ace.so"])
def test_a_file_name_without_a_valid_id_fails_init(world: World, file_name: str) -> None:
    h = world.harness()
    h.send(f"load {world.plugin(file_name)}")
    assert h.event("loaded")["rc"] == 1
    h.sentinel("x")
    assert "gives no valid plugin id" in h.stderr_path.read_text()


# --- start and register --------------------------------------------------------------------------


def test_register_starts_hostd_bridge_then_forwards_the_call_unchanged(world: World) -> None:
    h = world.loaded()
    params = '{"config_yaml":"' + b64(BLOCK) + '",  "schema_version":3}'
    envelope = h.call("r", "plugin.register", params)
    assert envelope["ok"] is True
    assert envelope["result"]["metadata"]["name"] == "fake"
    assert envelope["result"]["seen"] == {"config_yaml": b64(BLOCK), "schema_version": 3}
    started = [e for e in world.peer_log() if e["event"] == "started"]
    assert [s["argv"] for s in started] == [["bridge"]]
    start, invoke = world.received()[:2]
    assert start["method"] == "hostd.bridge.start"
    assert start["params"] == {"plugin_id": "my-plugin", "config_yaml": b64(BLOCK)}
    assert invoke["method"] == "hostd.invoke"
    assert invoke["params"]["method"] == "plugin.register"
    assert invoke["params"]["plugin_id"] == "my-plugin"
    assert invoke["params"]["params"] == {"config_yaml": b64(BLOCK), "schema_version": 3}
    assert "stream" not in invoke["params"]
    assert h.children() == [started[0]["pid"]]


def test_a_bad_hostd_block_is_the_register_envelope_invalid_config(world: World) -> None:
    h = world.loaded()
    envelope = h.call("r", "plugin.register", register_params("enabled: true\nhostd:\n    comand: [x]\n"))
    assert envelope == {
        "ok": False,
        "error": {
            "code": "invalid_config",
            "message": "hostd: unknown key hostd.comand (known: command, native, args, relay, timeout_s)",
        },
    }
    assert [m["method"] for m in world.received()] == ["hostd.bridge.start"]
    # The proxy sends reconfigure after a failed register: that one starts the plugin.
    assert h.call("r2", "plugin.reconfigure", register_params())["ok"] is True
    assert world.received("hostd.invoke")[-1]["params"]["method"] == "plugin.reconfigure"


def test_register_when_hostd_cannot_run_says_why(world: World) -> None:
    h = world.loaded(HOSTD_BIN=str(world.tmp / "no-such-hostd"))
    envelope = h.call("r", "plugin.register", register_params())
    assert envelope["ok"] is False
    assert envelope["error"]["code"] == "invalid_config"
    assert envelope["error"]["message"].startswith("hostd: cannot run ")
    assert "No such file or directory" in envelope["error"]["message"]
    assert h.children() == []


# --- calls ------------------------------------------------------------------------------------------


def test_a_call_is_hostd_invoke_with_its_params_bytes_and_the_learnt_timeout(world: World) -> None:
    h = world.registered()
    envelope = h.call("e", "echo", '{"b": [1, 2.50, "\\u00e9"], "host_callback_id": "proxy-id"}')
    assert envelope["ok"] is True
    result = envelope["result"]
    assert result["params"] == {"b": [1, 2.5, "é"], "host_callback_id": "proxy-id"}
    assert result["plugin_id"] == "my-plugin"
    assert result["timeout_s"] == 30.0  # hostd.bridge.start answered {"timeout_s": 30}
    assert result["stream"] is False


def test_an_empty_request_is_sent_as_an_empty_object(world: World) -> None:
    h = world.registered()
    assert h.call("e", "echo", "")["result"]["params"] == {}


def test_params_that_are_not_a_json_object_never_reach_hostd(world: World) -> None:
    h = world.registered()
    before = len(world.received())
    for i, bad in enumerate(['{"a":', "[1]", '{"a":1} x', '"\x01"']):
        envelope = h.call(f"bad{i}", "echo", bad)
        assert envelope == {
            "ok": False,
            "error": {"code": "host_call_failed", "message": "decode echo request: invalid JSON"},
        }
    assert h.call("ok", "echo", {"still": "fine"})["ok"] is True
    assert len(world.received()) == before + 1


def test_a_plugin_error_keeps_its_code_status_and_retryable(world: World) -> None:
    h = world.registered()
    assert h.call("f", "fail", {}) == {
        "ok": False,
        "error": {"code": "plugin_error", "message": "boom", "http_status": 503, "retryable": True},
    }
    assert h.call("u", "no.such.method", {}) == {
        "ok": False,
        "error": {"code": "host_call_failed", "message": "method not found: no.such.method"},
    }


def test_a_call_waits_at_most_timeout_s_then_cancels(world: World) -> None:
    h = world.registered(BLOCK.replace("timeout_s: 30", "timeout_s: 0.5"))
    assert h.call("s", "slow", {}) == {
        "ok": False,
        "error": {"code": "host_call_failed", "message": "plugin call timed out"},
    }
    invoke = next(m for m in world.received("hostd.invoke") if m["params"]["method"] == "slow")
    cancels = world.wait_log(
        lambda log: any(e["event"] == "recv" and e["msg"].get("method") == "$/cancelRequest" for e in log)
    )
    cancel = next(e["msg"] for e in cancels if e["event"] == "recv" and e["msg"].get("method") == "$/cancelRequest")
    assert cancel["params"] == {"id": invoke["id"]}
    assert "id" not in cancel
    assert h.call("e", "echo", {})["ok"] is True


def test_64_threads_at_once_each_get_their_own_answer(world: World) -> None:
    h = world.registered()
    h.send('burst 64 t echo {"tag":"%TAG%"}')
    for i in range(64):
        envelope = h.answer(f"t-{i}")
        assert envelope["ok"] is True
        assert envelope["result"]["params"] == {"tag": f"t-{i}"}
    script = '{"ok":true,"result":{"status_code":200,"headers":null,"body":"aGk="}}'
    h.send(f"script host.model.execute {script}")
    h.send("burst 64 m management.handle {}")
    for i in range(64):
        assert h.answer(f"m-{i}")["result"]["relayed"]["status_code"] == 200
    assert len(h.host_calls("host.model.execute")) == 64


def test_a_slow_call_does_not_hold_up_the_others(world: World) -> None:
    h = world.registered()
    h.send("call s slow {}")
    world.wait_log(lambda log: any(e["event"] == "recv" and e["msg"]["params"].get("method") == "slow" for e in log))
    assert h.call("e", "echo", {"x": 1})["ok"] is True
    assert not any(e["event"] == "answer" and e["tag"] == "s" for e in h.events)


# --- streams ----------------------------------------------------------------------------------------


def test_stream_chunks_reach_host_stream_emit_in_order_then_close(world: World) -> None:
    h = world.registered()
    chunks = [b64(f"chunk {i}\n") for i in range(40)]
    envelope = h.call("s", "executor.execute_stream", {"stream_id": "proxy-s1", "chunks": chunks})
    assert envelope == {"ok": True, "result": {"stream": True}}
    h.wait_for(lambda e: e["event"] == "host_call" and e["method"] == "host.stream.close")
    emits = [json.loads(c["params"]) for c in h.host_calls("host.stream.emit")]
    assert emits == [{"stream_id": "proxy-s1", "payload": c} for c in chunks]
    closes = [json.loads(c["params"]) for c in h.host_calls("host.stream.close")]
    assert closes == [{"stream_id": "proxy-s1"}]
    invoke = world.received("hostd.invoke")[-1]["params"]
    assert invoke["stream"] is True
    reads = world.received("hostd.stream.read")
    assert len(reads) == 41
    assert len({r["params"]["stream_id"] for r in reads}) == 1


def test_server_tool_handle_stream_is_a_streaming_call_too(world: World) -> None:
    h = world.registered()
    h.call("s", "server_tool.handle_stream", {"stream_id": "tool-1", "chunks": [b64("x")]})
    h.wait_for(lambda e: e["event"] == "host_call" and e["method"] == "host.stream.close")
    assert world.received("hostd.invoke")[-1]["params"]["stream"] is True
    assert [json.loads(c["params"])["stream_id"] for c in h.host_calls()] == ["tool-1", "tool-1"]


def test_an_error_chunk_is_emitted_with_its_error_then_the_stream_closes(world: World) -> None:
    h = world.registered()
    h.call("s", "executor.execute_stream", {"stream_id": "p2", "chunks": [b64("a")], "error": "upstream broke"})
    h.wait_for(lambda e: e["event"] == "host_call" and e["method"] == "host.stream.close")
    assert [(c["method"], json.loads(c["params"])) for c in h.host_calls()] == [
        ("host.stream.emit", {"stream_id": "p2", "payload": b64("a")}),
        ("host.stream.emit", {"stream_id": "p2", "error": "upstream broke"}),
        ("host.stream.close", {"stream_id": "p2"}),
    ]


def test_a_failed_emit_aborts_the_hostd_stream(world: World) -> None:
    h = world.registered()
    h.send('script host.stream.emit {"ok":false,"error":{"code":"host_call_failed","message":"stream p3 is not open"}}')
    h.call("s", "executor.execute_stream", {"stream_id": "p3", "chunks": [b64("a")], "hold": True})
    log = world.wait_log(
        lambda log: any(e["event"] == "recv" and e["msg"]["method"] == "hostd.stream.close" for e in log)
    )
    close = next(e["msg"] for e in log if e["event"] == "recv" and e["msg"]["method"] == "hostd.stream.close")
    sid = world.received("hostd.stream.read")[0]["params"]["stream_id"]
    assert close["params"] == {"stream_id": sid}
    assert len(h.host_calls("host.stream.emit")) == 1


def test_a_stream_without_a_proxy_stream_id_is_closed_in_hostd(world: World) -> None:
    h = world.registered()
    h.call("s", "executor.execute_stream", {"chunks": [b64("a")], "hold": True})
    log = world.wait_log(
        lambda log: any(e["event"] == "recv" and e["msg"]["method"] == "hostd.stream.close" for e in log)
    )
    assert not any(e["event"] == "recv" and e["msg"]["method"] == "hostd.stream.read" for e in log)
    h.sentinel("x")
    assert h.host_calls() == []


# --- relay --------------------------------------------------------------------------------------------


def test_a_relayed_host_call_reaches_the_proxy_with_its_bytes_and_its_answer_comes_back(world: World) -> None:
    h = world.registered()
    h.send('script host.model.execute {"ok":true,"result":{"status_code":200,"headers":null,"body":"aGk="}}')
    envelope = h.call("m", "management.handle", {"host_callback_id": "hostd-scope"})
    assert envelope == {"ok": True, "result": {"relayed": {"status_code": 200, "headers": None, "body": "aGk="}}}
    (call,) = h.host_calls("host.model.execute")
    assert json.loads(call["params"]) == {"host_callback_id": "proxy-cb-7", "model": "m", "stream": False}


def test_a_relayed_error_becomes_32000_with_the_envelope_code_status_and_retryable(world: World) -> None:
    h = world.registered()
    h.send(
        'script host.http.do {"ok":false,"error":{"code":"egress_denied","message":"nope",'
        '"http_status":502,"retryable":true}}'
    )
    got = h.call("r", "relay", {"method": "host.http.do", "params": {"url": "http://x/"}})["result"]["answer"]
    assert got == {
        "error": {
            "code": -32000,
            "message": "nope",
            "data": {"code": "egress_denied", "http_status": 502, "retryable": True},
        }
    }
    h.send("fail host.auth.list 1")
    got = h.call("r2", "relay", {"method": "host.auth.list", "params": {}})["result"]["answer"]
    assert got == {
        "error": {"code": -32000, "message": "host call host.auth.list failed", "data": {"code": "host_call_failed"}}
    }
    h.send("script host.log not json")
    got = h.call("r3", "relay", {"method": "host.log", "params": {"message": "x"}})["result"]["answer"]
    assert got["error"]["message"] == "host call host.log failed"
    got = h.call("r4", "relay", {"method": "host.routing.reset_cooldown", "params": {"auth_index": "a"}})
    assert got["result"]["answer"]["error"]["message"] == "unsupported host callback host.routing.reset_cooldown"


def test_a_relayed_result_with_no_result_key_is_an_empty_object(world: World) -> None:
    h = world.registered()
    h.send('script host.log {"ok":true}')
    assert h.call("r", "relay", {"method": "host.log", "params": {}})["result"]["answer"] == {}


def test_only_host_methods_are_relayed(world: World) -> None:
    h = world.registered()
    got = h.call("r", "relay", {"method": "hostd.status", "params": {}})["result"]["answer"]
    assert got["error"]["code"] == -32601
    assert got["error"]["message"] == "method not found: hostd.status"
    assert h.host_calls() == []


def test_a_cancelled_relayed_call_has_its_late_answer_dropped(world: World) -> None:
    h = world.registered()
    h.send("hold host.log")
    got = h.call("r", "relay", {"method": "host.log", "params": {"message": "late"}, "cancel": True})
    cancelled_id = got["result"]["answer"]["cancelled"]
    h.wait_for(lambda e: e["event"] == "host_call" and e["method"] == "host.log")
    h.send("release host.log")
    # The released call answers first on its thread; a second relayed call is the sentinel.
    h.send('script host.log {"ok":true,"result":{}}')
    assert h.call("r2", "relay", {"method": "host.log", "params": {}})["result"]["answer"] == {}
    h.send("shutdown")
    h.event("shutdown")
    unmatched = [e for e in world.peer_log() if e["event"] == "unmatched_answer"]
    assert unmatched == []
    answered = [e["msg"].get("id") for e in world.peer_log() if e["event"] == "recv" and "method" not in e["msg"]]
    assert cancelled_id not in answered


# --- faults and shutdown -------------------------------------------------------------------------------


def test_hostd_dying_mid_call_answers_plugin_unavailable_then_restarts_and_replays_register(world: World) -> None:
    h = world.registered()
    first = h.call("w", "whoami", {})["result"]["pid"]
    assert h.call("d", "die", {}) == {
        "ok": False,
        "error": {"code": "plugin_unavailable", "message": "plugin disconnected", "retryable": True},
    }

    def replayed(log: list[dict[str, Any]]) -> bool:
        return any(
            e["event"] == "recv" and e["pid"] != first and e["msg"].get("params", {}).get("method") == "plugin.register"
            for e in log
        )

    log = world.wait_log(replayed)
    second = next(e["pid"] for e in log if e["event"] == "started" and e["pid"] != first)
    msgs = [e["msg"] for e in log if e["event"] == "recv" and e["pid"] == second]
    assert msgs[0] == {
        "jsonrpc": "2.0",
        "id": msgs[0]["id"],
        "method": "hostd.bridge.start",
        "params": {"plugin_id": "my-plugin", "config_yaml": b64(BLOCK)},
    }
    assert msgs[1]["params"]["params"] == register_params()
    # Until the replay has been answered, calls may still see plugin_unavailable: retry, bounded.
    deadline = time.monotonic() + 60
    while True:
        envelope = h.call(f"w{time.monotonic()}", "whoami", {})
        if envelope["ok"] or time.monotonic() > deadline:
            break
        assert envelope["error"]["code"] == "plugin_unavailable"
    assert envelope["result"]["pid"] == second
    assert envelope["result"]["calls"] == ["plugin.register", "whoami"]
    assert gone(first)
    assert h.children() == [second]


def until_ok(h: Harness, method: str) -> dict[str, Any]:
    """Calls until the restarted hostd has replayed the registration (bounded)."""
    deadline = time.monotonic() + 60
    while True:
        envelope = h.call(f"{method}-{time.monotonic()}", method, {})
        if envelope["ok"] or time.monotonic() > deadline:
            return envelope
        assert envelope["error"]["code"] == "plugin_unavailable"


def test_a_restart_replays_the_last_successful_reconfigure_as_a_register(world: World) -> None:
    h = world.registered()
    block2 = BLOCK.replace("api_key: sk-x", "api_key: sk-y")
    assert h.call("re", "plugin.reconfigure", register_params(block2))["ok"] is True
    failed = h.call("bad", "plugin.reconfigure", register_params("hostd: {}\n"))
    assert failed["error"]["code"] == "invalid_config"
    first = h.call("w", "whoami", {})["result"]["pid"]
    h.call("d", "die", {})
    assert until_ok(h, "whoami")["ok"] is True
    msgs = [e["msg"] for e in world.peer_log() if e["event"] == "recv" and e["pid"] != first]
    assert msgs[0]["params"] == {"plugin_id": "my-plugin", "config_yaml": b64(block2)}
    assert msgs[1]["params"]["method"] == "plugin.register"
    assert msgs[1]["params"]["params"] == register_params(block2)


def test_hostd_killed_from_outside_is_restarted_too(world: World) -> None:
    h = world.registered()
    first = h.call("w", "whoami", {})["result"]["pid"]
    os.kill(first, signal.SIGKILL)
    world.wait_log(lambda log: any(e["event"] == "started" and e["pid"] != first for e in log))
    deadline = time.monotonic() + 60
    while True:
        envelope = h.call(f"w{time.monotonic()}", "whoami", {})
        if envelope["ok"] or time.monotonic() > deadline:
            break
    assert envelope["ok"] is True
    assert envelope["result"]["pid"] != first


def test_a_hostd_that_stops_reading_fails_the_call_at_its_deadline_and_is_restarted(world: World) -> None:
    h = world.registered(BLOCK.replace("timeout_s: 30", "timeout_s: 1"))
    first = h.call("w", "whoami", {})["result"]["pid"]
    assert h.call("stop", "stop_reading", {})["ok"] is True
    big = {"blob": "x" * (8 << 20)}
    h.send("call big echo " + json.dumps(big))
    h.send("call small echo {}")
    assert h.answer("big", timeout=30)["error"]["code"] == "plugin_unavailable"
    assert h.answer("small", timeout=30)["ok"] is False
    assert "cutting the connection" in h.stderr_path.read_text()
    envelope = until_ok(h, "whoami")
    assert envelope["ok"] is True
    assert envelope["result"]["pid"] != first
    assert gone(first)


def test_shutdown_sends_plugin_shutdown_and_leaves_no_process(world: World) -> None:
    h = world.registered()
    pid = h.call("w", "whoami", {})["result"]["pid"]
    h.send("call s slow {}")  # in flight at shutdown
    world.wait_log(lambda log: any(e["event"] == "recv" and e["msg"]["params"].get("method") == "slow" for e in log))
    h.send("shutdown")
    h.event("shutdown")
    assert h.answer("s")["error"]["code"] == "plugin_unavailable"
    assert world.received("hostd.invoke")[-1]["params"] == {
        "plugin_id": "my-plugin",
        "method": "plugin.shutdown",
        "params": {},
        "timeout_s": 5.0,
    }
    assert [e["event"] for e in world.peer_log() if e["event"] in ("eof", "dying")] == ["eof"]
    assert h.children() == []
    assert gone(pid)
    h.send("close")
    h.event("closed")
    assert h.close() == 0


def test_the_harness_exiting_takes_hostd_with_it_within_a_second(world: World) -> None:
    h = world.registered()
    pid = h.call("w", "whoami", {})["result"]["pid"]
    pidfd = os.pidfd_open(pid)
    try:
        h.send("exit")
        readable, _, _ = select.select([pidfd], [], [], 1.0)
        assert readable == [pidfd], "hostd outlived the process that loaded the bridge by more than a second"
    finally:
        os.close(pidfd)


def test_under_address_sanitizer_a_restart_and_replay_leak_nothing(world: World) -> None:
    h = world.registered(asan=True)
    h.call("s", "executor.execute_stream", {"stream_id": "a2", "hold": True})
    assert h.call("d", "die", {})["error"]["code"] == "plugin_unavailable"
    assert until_ok(h, "whoami")["ok"] is True
    h.send("shutdown")
    h.event("shutdown")
    h.send("close")
    h.event("closed")
    assert h.close() == 0
    stderr = h.stderr_path.read_text()
    assert "registration replayed" in stderr
    assert "AddressSanitizer" not in stderr
    assert "LeakSanitizer" not in stderr


def test_under_address_sanitizer_nothing_leaks_or_overflows(world: World) -> None:
    h = world.registered(asan=True)
    h.send('burst 64 t echo {"tag":"%TAG%"}')
    for i in range(64):
        assert h.answer(f"t-{i}")["ok"] is True
    h.send('script host.model.execute {"ok":true,"result":{"status_code":200}}')
    h.send("burst 16 m management.handle {}")
    h.call("s", "executor.execute_stream", {"stream_id": "a1", "chunks": [b64("x" * 5000)] * 5, "error": "e"})
    for i in range(16):
        assert h.answer(f"m-{i}")["ok"] is True
    h.wait_for(lambda e: e["event"] == "host_call" and e["method"] == "host.stream.close")
    h.call("bad", "echo", '{"unterminated": "')
    h.call("deep", "echo", "[" * 5000)
    h.call("hold", "executor.execute_stream", {"stream_id": "a2", "hold": True})
    assert h.call("d", "die", {})["error"]["code"] == "plugin_unavailable"
    h.send("shutdown")
    h.event("shutdown")
    h.send("close")
    h.event("closed")
    assert h.close() == 0
    stderr = h.stderr_path.read_text()
    assert "AddressSanitizer" not in stderr
    assert "LeakSanitizer" not in stderr
