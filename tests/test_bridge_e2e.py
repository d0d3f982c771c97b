"""hostd-bridge.so end to end: the loader harness (as CLIProxyAPI's loader) → the bridge → the real
``hostd bridge`` → a real plugin (Python, or a native library in a worker), and back.

The harness's host table plays the proxy: it records every ``host.*`` call the bridge relays
and answers from a script. tests/test_bridge.py covers the C side against a test double; here
nothing is a double but the proxy's host table itself.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_bridge import ASAN, ROOT, STRICT, Build, Harness, World, build, gone  # noqa: F401

PLUGIN = ROOT / "tests" / "support" / "plugins" / "bridged.py"
NATIVE_SRC = ROOT / "tests" / "native" / "testplugin.c"


def block(plugin_id: str, relay: str = "[http, model, auth, log, routing, affinity]") -> str:
    return (
        "enabled: true\npriority: 1\nhostd:\n"
        f"  command: [{json.dumps(sys.executable)}, {json.dumps(str(PLUGIN))}, {plugin_id}]\n"
        '  args: ["--auth-dir", "", "--model-base-url", ""]\n'
        f"  relay: {relay}\n  timeout_s: 30\nplugin_setting: keep-me\n"
    )


def wait_text(h: Harness, text: str, timeout: float = 30.0) -> None:
    """Bounded wait for hostd (whose log is the harness's stderr) to log ``text``."""
    deadline = time.monotonic() + timeout
    while text not in h.stderr_path.read_text():
        assert time.monotonic() < deadline, f"hostd never logged {text!r}"
        time.sleep(0.02)


def register(h: Harness, text: str, tag: str = "register") -> dict[str, Any]:
    params = {"config_yaml": base64.b64encode(text.encode()).decode(), "schema_version": 3}
    return h.call(tag, "plugin.register", params, timeout=60)


@pytest.fixture
def real(tmp_path: Path, build: Build) -> Iterator[World]:  # noqa: F811
    """A world whose $HOSTD_BIN is the real hostd of this checkout."""
    hostd = tmp_path / "hostd"
    hostd.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hostd "$@"\n')
    hostd.chmod(0o755)
    env = {**os.environ, "HOSTD_BIN": str(hostd), "PYTHONPATH": str(ROOT), "ASAN_OPTIONS": "detect_leaks=1"}
    w = World(tmp_path, build, env, tmp_path / "unused.jsonl", [])
    yield w
    for h in w.harnesses:
        h.close()


def test_register_reaches_the_python_plugin_unchanged_and_answers_as_the_envelope(real: World) -> None:
    h = real.loaded("bridged-one.so")
    envelope = register(h, block("bridged-one"))
    assert envelope["ok"] is True, envelope
    seen = envelope["result"]["seen"]
    assert base64.b64decode(seen["config_yaml"]).decode() == block("bridged-one")
    assert seen["schema_version"] == 3
    assert envelope["result"]["count"] == 1


def test_management_handle_relays_host_model_execute_with_the_proxys_callback_id(real: World) -> None:
    h = real.loaded("bridged-two.so")
    h.send('script host.model.execute {"ok":true,"result":{"status_code":200,"headers":null,"body":"aGk="}}')
    assert register(h, block("bridged-two"))["ok"] is True
    envelope = h.call("m", "management.handle", {"host_callback_id": "proxy-cb-42"}, timeout=60)
    assert envelope == {"ok": True, "result": {"model_status": 200, "model_body": "hi"}}
    [relayed] = h.host_calls("host.model.execute")
    params = json.loads(relayed["params"])
    assert params["host_callback_id"] == "proxy-cb-42"  # the proxy's id, not hostd's scope
    assert params["entry_protocol"] == "openai"


def test_execute_stream_chunks_reach_the_proxy_in_order_then_close(real: World) -> None:
    h = real.loaded("bridged-three.so")
    assert register(h, block("bridged-three"))["ok"] is True
    chunks = [base64.b64encode(f"chunk {i}".encode()).decode() for i in range(20)]
    envelope = h.call("s", "executor.execute_stream", {"stream_id": "proxy-stream-9", "chunks": chunks}, timeout=60)
    assert envelope["ok"] is True, envelope
    h.wait_for(lambda e: e["event"] == "host_call" and e["method"] == "host.stream.close")
    calls = [c for c in h.host_calls() if c["method"].startswith("host.stream.")]
    emits = [json.loads(c["params"]) for c in calls if c["method"] == "host.stream.emit"]
    assert [e["stream_id"] for e in emits] == ["proxy-stream-9"] * 20
    assert [base64.b64decode(e["payload"]).decode() for e in emits] == [f"chunk {i}" for i in range(20)]
    assert calls[-1]["method"] == "host.stream.close"
    assert json.loads(calls[-1]["params"])["stream_id"] == "proxy-stream-9"


def test_64_threads_calling_at_once_are_all_answered(real: World) -> None:
    h = real.loaded("bridged-four.so")
    assert register(h, block("bridged-four"))["ok"] is True
    h.send("burst 64 w whoami {}")
    answers = [h.answer(f"w-{i}", timeout=60) for i in range(64)]
    assert {a["ok"] for a in answers} == {True}
    assert len({a["result"]["pid"] for a in answers}) == 1


def test_a_killed_plugin_is_unavailable_then_restarted_with_its_register_replayed(real: World) -> None:
    h = real.loaded("bridged-five.so")
    assert register(h, block("bridged-five"))["ok"] is True
    first = h.call("who", "whoami", {}, timeout=60)["result"]["pid"]
    died = h.call("die", "die", {}, timeout=60)
    assert died["ok"] is False
    assert died["error"]["code"] == "plugin_unavailable" and died["error"]["retryable"] is True
    wait_text(h, "plugin.register replayed")
    again = h.call("who-again", "whoami", {}, timeout=60)
    assert again["result"]["pid"] != first
    assert again["result"]["registrations"] == 1  # the register was replayed to the new process


def test_a_relayed_stream_left_open_is_closed_through_the_host_table_when_the_plugin_dies(real: World) -> None:
    h = real.loaded("bridged-six.so")
    h.send('script host.http.do_stream {"ok":true,"result":{"status_code":200,"stream_id":"proxy-http-7"}}')
    assert register(h, block("bridged-six"))["ok"] is True
    opened = h.call("o", "open_stream", {"url": "http://127.0.0.1:9/"}, timeout=60)
    assert opened == {"ok": True, "result": {"stream_id": "proxy-http-7"}}
    h.call("die", "die", {}, timeout=60)
    close = h.wait_for(lambda e: e["event"] == "host_call" and e["method"] == "host.http.stream_close", timeout=30)
    assert json.loads(close["params"]) == {"stream_id": "proxy-http-7"}


def test_a_family_not_relayed_is_served_by_hostd_itself(real: World) -> None:
    h = real.loaded("bridged-seven.so")
    assert register(h, block("bridged-seven", relay="[log]"))["ok"] is True
    envelope = h.call("m", "management.handle", {"host_callback_id": "proxy-cb-1"}, timeout=60)
    # hostd serves host.model.* itself here, and this hostd has no model backend.
    assert envelope["ok"] is False
    assert "host model executor is unavailable" in envelope["error"]["message"]
    assert h.host_calls("host.model.execute") == []


def test_a_bad_hostd_block_is_invalid_config(real: World) -> None:
    h = real.loaded("bridged-eight.so")
    envelope = register(h, "hostd:\n  relay: [nonsense]\n")
    assert envelope["ok"] is False
    assert envelope["error"]["code"] == "invalid_config"
    assert envelope["error"]["message"].startswith("hostd: ")


def test_a_native_plugin_behind_the_bridge(real: World, tmp_path: Path) -> None:
    lib = tmp_path / "native-test.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-pthread", "-O1", "-o", str(lib), str(NATIVE_SRC)], check=True)
    h = real.loaded("native-test.so")
    text = f'hostd:\n  native: "{lib}"\n  args: ["--auth-dir", "", "--model-base-url", ""]\n'
    envelope = register(h, text)
    assert envelope["ok"] is True, envelope
    assert envelope["result"]["metadata"]["Name"] == "native-test"


def test_shutdown_leaves_no_process_and_a_dead_harness_takes_hostd_with_it(real: World) -> None:
    h = real.loaded("bridged-nine.so")
    assert register(h, block("bridged-nine"))["ok"] is True
    plugin_pid = h.call("who", "whoami", {}, timeout=60)["result"]["pid"]
    [hostd_pid] = h.children()
    h.send("shutdown")
    h.event("shutdown", timeout=30)
    assert h.children() == []
    assert gone(hostd_pid)
    assert gone(plugin_pid)


def test_the_harness_exiting_ends_hostd_and_the_plugin(real: World) -> None:
    h = real.loaded("bridged-ten.so")
    assert register(h, block("bridged-ten"))["ok"] is True
    plugin_pid = h.call("who", "whoami", {}, timeout=60)["result"]["pid"]
    [hostd_pid] = h.children()
    h.send("exit")
    h.proc.wait(timeout=10)
    deadline = time.monotonic() + 5  # PR_SET_PDEATHSIG acts within a second
    while not (gone(hostd_pid) and gone(plugin_pid)):
        assert time.monotonic() < deadline, "hostd or its plugin outlived the proxy"
        time.sleep(0.02)


def test_the_bridge_under_asan_reports_nothing(real: World) -> None:
    h = real.loaded("bridged-asan.so", asan=True)
    assert register(h, block("bridged-asan"))["ok"] is True
    chunks = [base64.b64encode(b"x" * 100).decode()] * 5
    assert h.call("s", "executor.execute_stream", {"stream_id": "p-1", "chunks": chunks}, timeout=60)["ok"] is True
    h.wait_for(lambda e: e["event"] == "host_call" and e["method"] == "host.stream.close")
    h.send("shutdown")
    h.event("shutdown", timeout=30)
    h.send("close")
    h.event("closed")
    assert h.close() == 0
    assert "ERROR: AddressSanitizer" not in h.stderr_path.read_text()
    assert "LeakSanitizer" not in h.stderr_path.read_text()
