"""The native plugin worker (PROTOCOL §14), driven directly over its stdio pipes.

Each test spawns ``python -m hostd.native.worker LIB.so`` with C (and Go ``c-shared``) plugins
built here from ``tests/native/`` and plays hostd's side of the protocol (``tests/native/harness``):
the hello, invokes and their envelope mapping, host calls from plugin threads (many at once,
re-entrant, from threads the plugin made), stdout isolation, every load error text, crash statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hostd.client import Client
from hostd.client import RpcError as RpcError_
from hostd.native import LOAD_ERROR_PREFIX
from hostd.native.naming import plugin_id_from_path, split_versioned_name, valid_plugin_id
from hostd.native.supervisor import (
    Exit,
    NativeSupervisor,
    Restart,
    describe_death,
    load_error,
    load_error_in_line,
    worker_command,
)
from tests.native.harness import NO_ANSWER, TIMEOUT, RpcError, Worker, build_c, default_handler, running
from tests.support.fake_proxy import FakeProxy
from tests.support.gotool import go_build
from tests.support.helpers import b64, read_emit_stream, unb64
from tests.support.hostd_proc import HostdProcess
from tests.support.plugins import start_run
from tests.support.upstream import Request as UpstreamRequest
from tests.support.upstream import Response, Upstream

NATIVE = Path(__file__).parent / "native"
T = 30.0


class _AnyStr(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other != ""

    __hash__ = str.__hash__


ANY_STR = _AnyStr()
SOURCE = NATIVE / "testplugin.c"


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("native")
    built = {
        "plugin": build_c(SOURCE, out / "native-test-v1.2.0.so"),
        "no_init": build_c(SOURCE, out / "no-init.so", "NO_INIT"),
        "init_rc": build_c(SOURCE, out / "init-rc.so", "INIT_RC=2"),
        "abi2": build_c(SOURCE, out / "abi2.so", "PLUGIN_ABI=2"),
        "incomplete": build_c(SOURCE, out / "incomplete.so", "INCOMPLETE"),
        "log_in_init": build_c(SOURCE, out / "log-in-init.so", "LOG_IN_INIT"),
    }
    not_a_library = out / "not-a-library.so"
    not_a_library.write_text("this is a text file\n")
    built["not_a_library"] = not_a_library
    return built


@pytest.fixture(scope="module")
def golib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return go_build(NATIVE / "goplugin", tmp_path_factory.mktemp("go") / "go-native.so", buildmode="c-shared")


# --- hello and invokes ----------------------------------------------------------------------------


def test_hello_carries_the_id_from_the_file_name(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        hello = worker.hello.result(TIMEOUT)
        assert hello["params"] == {"plugin_id": "native-test", "schema_version": 3}
        assert worker.requests[0] is hello  # the hello is the worker's first line


def test_hello_carries_the_name_given(libs: dict[str, Path]) -> None:
    with running(libs["plugin"], "--name", "chosen.id") as worker:
        assert worker.hello.result(TIMEOUT)["params"]["plugin_id"] == "chosen.id"


def test_a_refused_hello_is_logged_and_the_worker_serves_on(libs: dict[str, Path]) -> None:
    def refuse(worker: Worker, msg: dict[str, Any]) -> Any:
        if msg["method"] == "hostd.hello":
            raise RpcError({"code": -32002, "message": "plugin id is fixed to other", "data": {"code": "forbidden"}})
        return {}

    with running(libs["plugin"], handler=refuse) as worker:
        worker.wait_stderr("plugin id is fixed to other")
        assert worker.invoke("echo", {"x": 1}) == {"method": "echo", "params": {"x": 1}}


def test_any_method_reaches_the_plugin_with_the_params_bytes_as_sent(libs: dict[str, Path]) -> None:
    params = {"host_callback_id": "cb-1", "stream_id": "s-1", "nested": {"k": [1, 2.5, None, "é"]}}
    with running(libs["plugin"]) as worker:
        result = worker.invoke("some.future_method", params)
        assert result == {"method": "some.future_method", "params": params}
        # byte for byte: the answer line holds the params text exactly as this side encoded it
        sent = json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()
        assert any(sent in line for line in worker.raw_lines)


def test_requests_in_any_key_order_and_without_params_reach_the_plugin(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        seven, eight = worker.expect(7), worker.expect(8)
        worker.send_raw(b'{"method":"echo","params":{"b":2},"id":7,"jsonrpc":"2.0"}\n')
        worker.send_raw(b'{ "jsonrpc": "2.0", "id": 8, "method": "echo" }\n')
        assert seven.result(TIMEOUT)["result"] == {"method": "echo", "params": {"b": 2}}
        assert eight.result(TIMEOUT)["result"] == {"method": "echo", "params": {}}


def test_large_params_and_results_pass_whole(libs: dict[str, Path]) -> None:
    body = b64(bytes(range(256)) * 24 * 1024)  # 6 MiB of bytes, 8 MiB of base64
    with running(libs["plugin"]) as worker:
        assert worker.invoke("echo", {"body": body}) == {"method": "echo", "params": {"body": body}}

    def big(worker: Worker, msg: dict[str, Any]) -> Any:
        if msg["method"] == "host.http.do":
            return {"StatusCode": 200, "Headers": None, "Body": body}
        if msg["method"] == "host.model.stream_read":
            return {"payload": None, "error": "", "done": True}
        return default_handler(worker, msg)

    with running(libs["plugin"], handler=big) as worker:
        result = worker.invoke("management.handle", {"host_callback_id": "cb", "url": "http://127.0.0.1:9/"})
        assert result["http"]["result"]["Body"] == body


def test_answers_in_another_key_order_reach_the_plugin(libs: dict[str, Path]) -> None:
    def reordered(worker: Worker, msg: dict[str, Any]) -> Any:
        if msg["method"] == "host.auth.list":
            worker.send_raw(b'{"result": {"files": []}, "id": %d, "jsonrpc": "2.0"}\n' % msg["id"])
            return NO_ANSWER
        return default_handler(worker, msg)

    with running(libs["plugin"], handler=reordered) as worker:
        result = worker.invoke("raw_host_call", {"what": "empty"})
        assert result == {"rc": 0, "resp": {"ok": True, "result": {"files": []}}}


def test_a_pretty_printed_result_is_one_line_and_kept_exactly(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        assert worker.invoke("pretty") == {"a": [1, 2], "big": 123456789012345678901234567890}
        line = next(raw for raw in worker.raw_lines if b"123456789012345678901234567890" in raw)
        assert line.count(b"\n") == 1  # the plugin's newlines became spaces, its big number untouched


def test_ok_without_result_is_an_empty_object(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        assert worker.invoke("ok.no_result") == {}


@pytest.mark.parametrize(
    ("method", "message", "data"),
    [
        ("err.envelope", "went wrong", {"code": "bad_thing", "http_status": 418, "retryable": True}),
        ("err.rc_envelope", "slow down", {"code": "quota", "http_status": 429}),
        ("err.rc_text", "plugin call err.rc_text returned 7: boom", {"code": "host_call_failed"}),
        ("err.empty", "empty plugin response for err.empty", {"code": "host_call_failed"}),
        ("err.ok_false", "plugin call failed", {"code": "host_call_failed"}),
        ("err.blank_message", "plugin call failed", {"code": "x"}),
        ("err.not_json", "invalid plugin response for err.not_json", {"code": "host_call_failed"}),
    ],
)
def test_plugin_envelopes_map_to_json_rpc_errors(
    libs: dict[str, Path], method: str, message: str, data: dict[str, Any]
) -> None:
    with running(libs["plugin"]) as worker:
        answer = worker.invoke_answer(method)
        assert answer["error"] == {"code": -32000, "message": message, "data": data}


def test_a_hung_call_blocks_only_itself(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        _, hung = worker.start_invoke("hang", {})
        assert worker.invoke("echo", {"n": 1}) == {"method": "echo", "params": {"n": 1}}
        assert worker.invoke("echo", {"n": 2}) == {"method": "echo", "params": {"n": 2}}
        assert not hung.done()


def test_many_invokes_run_in_the_plugin_at_once(libs: dict[str, Path]) -> None:
    n = 24
    all_in = threading.Barrier(n, timeout=TIMEOUT)

    def barrier(worker: Worker, msg: dict[str, Any]) -> Any:
        if msg["method"] == "test.wait":
            all_in.wait()  # answered only once all n plugin calls are inside the plugin together
            return {"n": n}
        return default_handler(worker, msg)

    with running(libs["plugin"], handler=barrier) as worker:
        for _round in range(2):  # the second round runs on the threads the first one left idle
            futures = [worker.start_invoke("raw_host_call", {"what": "wait"})[1] for _ in range(n)]
            assert [f.result(TIMEOUT)["result"]["resp"] for f in futures] == [{"ok": True, "result": {"n": n}}] * n
            all_in.reset()


def test_a_line_that_is_not_json_is_logged_and_the_worker_serves_on(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        worker.send_raw(b"this is not json\n[1,2]\n\n")
        worker.wait_stderr("ignored a line from hostd that is not a JSON object")
        assert worker.invoke("echo", {}) == {"method": "echo", "params": {}}


def test_a_cancelled_call_s_late_answer_is_dropped(libs: dict[str, Path]) -> None:
    release = threading.Event()

    def held(worker: Worker, msg: dict[str, Any]) -> Any:
        if msg["method"] == "test.wait":
            assert release.wait(TIMEOUT)
            return {"released": True}
        return default_handler(worker, msg)

    with running(libs["plugin"], handler=held) as worker:
        cancelled_id, _ = worker.start_invoke("raw_host_call", {"what": "wait"})
        _, kept = worker.start_invoke("raw_host_call", {"what": "wait"})
        worker.wait_requests("test.wait", 2)
        worker.cancel(cancelled_id)
        assert worker.invoke("echo", {}) == {"method": "echo", "params": {}}  # the cancel was read before this
        release.set()
        assert kept.result(TIMEOUT)["result"]["rc"] == 0
        worker.close_input()  # the worker lets calls in progress finish and answer before it exits
        assert worker.wait() == 0
        assert [a for a in worker.answers if a.get("id") == cancelled_id] == []


# --- plugin → host --------------------------------------------------------------------------------


def test_management_handle_calls_the_host_and_composes_its_answer(libs: dict[str, Path]) -> None:
    reads = iter(
        [
            {"payload": b64(b"data: one\n\n"), "error": "", "done": False},
            {"payload": b64(b"data: two\n\n"), "error": "", "done": False},
            {"payload": None, "error": "", "done": True},
        ]
    )

    def host(worker: Worker, msg: dict[str, Any]) -> Any:
        method, params = msg["method"], msg.get("params")
        if method == "host.http.do":
            return {"StatusCode": 200, "Headers": {"X-Seen": [params["url"]]}, "Body": b64(b"hello")}
        if method == "host.model.execute_stream":
            return {"status_code": 200, "headers": None, "stream_id": "model-1"}
        if method == "host.model.stream_read":
            assert params == {"stream_id": "model-1"}
            return next(reads)
        return default_handler(worker, msg)

    with running(libs["plugin"], handler=host) as worker:
        params = {"host_callback_id": "cb-7", "url": "http://127.0.0.1:9/x"}
        result = worker.invoke("management.handle", params)
        assert result["log"] == {"ok": True, "result": {}}
        assert result["http"] == {
            "ok": True,
            "result": {"StatusCode": 200, "Headers": {"X-Seen": ["http://127.0.0.1:9/x"]}, "Body": b64(b"hello")},
        }
        assert result["model"]["result"]["stream_id"] == "model-1"
        assert [r["result"]["payload"] for r in result["reads"]] == [b64(b"data: one\n\n"), b64(b"data: two\n\n"), None]
        assert result["close"] == {"ok": True, "result": {}}
        calls = {m["method"]: m["params"] for m in worker.requests if m["method"] != "hostd.hello"}
        assert calls["host.log"]["host_callback_id"] == "cb-7"
        assert calls["host.http.do"] == {"method": "GET", "url": "http://127.0.0.1:9/x", "host_callback_id": "cb-7"}
        assert calls["host.model.execute_stream"]["host_callback_id"] == "cb-7"
        assert calls["host.model.stream_close"] == {"stream_id": "model-1"}


def test_a_host_error_becomes_the_proxy_s_envelope(libs: dict[str, Path]) -> None:
    def failing(worker: Worker, msg: dict[str, Any]) -> Any:
        if msg["method"] == "host.auth.list":
            raise RpcError({"code": -32000, "message": "auth directory <x> & co", "data": {"code": "host_call_failed"}})
        return default_handler(worker, msg)

    with running(libs["plugin"], handler=failing) as worker:
        result = worker.invoke("raw_host_call", {"what": "empty"})
        assert result["rc"] == 0
        assert result["resp"] == {
            "ok": False,
            "error": {"code": "host_call_failed", "message": "auth directory <x> & co"},
        }
        # written as Go's json.Marshal writes it: HTML characters escaped
        assert any(b"auth directory \\u003cx\\u003e \\u0026 co" in line for line in worker.raw_lines)


def test_a_request_without_bytes_has_no_params(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        result = worker.invoke("raw_host_call", {"what": "empty"})
        assert result == {"rc": 0, "resp": {"ok": True, "result": {}}}
        (request,) = worker.wait_requests("host.auth.list")
        assert "params" not in request


def test_request_bytes_that_are_not_json_are_answered_by_the_worker(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        result = worker.invoke("raw_host_call", {"what": "invalid"})
        assert result == {
            "rc": 0,
            "resp": {
                "ok": False,
                "error": {"code": "host_call_failed", "message": "decode host.log request: invalid JSON"},
            },
        }
        assert [m["method"] for m in worker.requests] == ["hostd.hello"]  # nothing reached hostd


def test_request_json_with_newlines_stays_one_line(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        assert worker.invoke("raw_host_call", {"what": "newlines"})["rc"] == 0
        (request,) = worker.wait_requests("host.log")
        assert request["params"] == {"level": "info", "message": "two\nlines"}


def test_a_null_method_returns_1_with_the_response_cleared(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        assert worker.invoke("raw_host_call", {"what": "null_method"}) == {"rc": 1, "resp": "cleared"}


def test_a_call_without_a_response_buffer_returns_0(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        assert worker.invoke("raw_host_call", {"what": "no_response"}) == {"rc": 0, "resp": None}
        worker.wait_requests("host.log")


def test_many_plugin_threads_call_the_host_at_once(libs: dict[str, Path]) -> None:
    n = 16
    all_in = threading.Barrier(n, timeout=TIMEOUT)

    def barrier(worker: Worker, msg: dict[str, Any]) -> Any:
        if msg["method"] == "host.log":
            all_in.wait()  # every thread's call is in flight before any is answered
        return default_handler(worker, msg)

    with running(libs["plugin"], handler=barrier) as worker:
        assert worker.invoke("threads", {"n": n}) == {"ok_count": n}
        assert sorted(m["params"]["message"] for m in worker.requests if m["method"] == "host.log") == sorted(
            f"thread {i}" for i in range(n)
        )


def test_the_bench_probe_makes_sequential_host_calls_from_a_plugin_thread(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        result = worker.invoke("bench.host_log", {"n": 50})
        assert (result["n"], result["ok"]) == (50, 50) and result["total_ns"] > 0
        assert len(worker.wait_requests("host.log", 50)) == 50
        assert "samples_ns" not in result


def test_the_bench_probe_returns_each_round_trip_when_asked(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        result = worker.invoke("bench.host_log", {"n": 20, "samples": 1})
        assert (result["n"], result["ok"]) == (20, 20)
        samples = result["samples_ns"]
        assert len(samples) == 20 and all(isinstance(s, int) and s > 0 for s in samples)
        assert sum(samples) <= result["total_ns"]


def test_host_calls_are_re_entrant_while_other_invokes_run(libs: dict[str, Path]) -> None:
    answered: dict[str, Any] = {}

    def nested(worker: Worker, msg: dict[str, Any]) -> Any:
        if msg["method"] == "test.wait":
            # while the plugin waits inside this host call, hostd invokes it again
            answered["echo"] = worker.invoke("echo", {"inner": True})
            return {"after": "echo"}
        return default_handler(worker, msg)

    with running(libs["plugin"], handler=nested) as worker:
        result = worker.invoke("raw_host_call", {"what": "wait"})
        assert result == {"rc": 0, "resp": {"ok": True, "result": {"after": "echo"}}}
        assert answered["echo"] == {"method": "echo", "params": {"inner": True}}


def test_an_executor_emits_from_a_thread_of_its_own(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        assert worker.invoke("executor.execute_stream", {"stream_id": "emit-1", "host_callback_id": "cb"}) == {}
        worker.wait_requests("host.stream.close")
        emitted = [m["params"] for m in worker.requests if m["method"].startswith("host.stream.")]
        assert emitted == [
            {"stream_id": "emit-1", "payload": b64(b"one")},
            {"stream_id": "emit-1", "payload": b64(b"two")},
            {"stream_id": "emit-1", "payload": b64(b"three")},
            {"stream_id": "emit-1"},
        ]


def test_an_executor_answers_with_inline_chunks(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        result = worker.invoke("executor.execute_stream", {"stream_id": "emit-2", "inline": 1})
        assert result == {"chunks": [{"Payload": b64(b"hello")}, {"Payload": b64(b" world")}, {"Err": "the end"}]}


def test_host_calls_inside_init_are_served(libs: dict[str, Path]) -> None:
    with running(libs["log_in_init"]) as worker:
        first, hello = worker.requests[:2]
        assert (first["method"], first["params"]) == ("host.log", {"message": "hello from init"})
        assert hello["method"] == "hostd.hello"


def test_a_go_plugin_calls_the_host_from_several_goroutines_at_once(golib: Path) -> None:
    n = 6
    all_in = threading.Barrier(n, timeout=TIMEOUT)

    def barrier(worker: Worker, msg: dict[str, Any]) -> Any:
        if msg["method"] == "host.log":
            all_in.wait()
            return {"seen": msg["params"]["message"]}
        return default_handler(worker, msg)

    with running(golib, handler=barrier) as worker:
        assert worker.hello.result(TIMEOUT)["params"]["plugin_id"] == "go-native"
        assert worker.invoke("plugin.register", {"config_yaml": "", "schema_version": 1})["metadata"] == {
            "Name": "go-native-test"
        }
        result = worker.invoke("management.handle", {"n": n, "host_callback_id": "cb-go"})
        assert sorted(r["seen"] for r in result["results"]) == sorted(f"goroutine {i}" for i in range(n))
        assert {m["params"]["host_callback_id"] for m in worker.requests if m["method"] == "host.log"} == {"cb-go"}
        worker.wait_stderr("go plugin: management.handle done")  # fmt.Println went to stderr


def test_a_go_plugin_under_load_from_many_goroutines(golib: Path) -> None:
    n, rounds = 32, 20

    def host(worker: Worker, msg: dict[str, Any]) -> Any:
        if msg["method"] == "host.log":
            return {"seen": msg["params"]["message"]}
        return default_handler(worker, msg)

    with running(golib, handler=host) as worker:
        result = worker.invoke("management.handle", {"n": n, "rounds": rounds, "host_callback_id": "cb"})
        assert sorted(r["seen"] for r in result["results"]) == sorted(f"goroutine {i}" for i in range(n))
        assert len(worker.wait_requests("host.log", n * rounds)) == n * rounds


def test_a_go_panic_ends_the_worker_with_sigabrt(golib: Path) -> None:
    worker = Worker(golib)
    try:
        worker.hello.result(TIMEOUT)
        worker.start_invoke("crash.panic", {})
        assert worker.wait() == -signal.SIGABRT  # Go's runtime in a c-shared library aborts on a fatal panic
        worker.wait_stderr("assignment to entry in nil map")
    finally:
        worker.kill()


# --- stdio isolation, shutdown --------------------------------------------------------------------


def test_what_the_plugin_prints_goes_to_stderr_never_into_the_protocol(libs: dict[str, Path]) -> None:
    with running(libs["plugin"]) as worker:
        assert worker.invoke("print") == {"printed": True}
        worker.wait_stderr("printed by the plugin on stdout")
        worker.wait_stderr("printed by the plugin on stderr")
        worker.wait_stderr("written to fd 1")
        assert worker.invoke("echo", {}) == {"method": "echo", "params": {}}
    assert worker.bad_lines == []
    assert not any(b"printed by" in line or b"written to" in line for line in worker.raw_lines)


def test_eof_calls_the_table_s_shutdown_and_exits_0(libs: dict[str, Path]) -> None:
    worker = Worker(libs["plugin"])
    try:
        worker.hello.result(TIMEOUT)
        assert worker.invoke("plugin.shutdown") == {"method": "plugin.shutdown", "params": {}}
        worker.close_input()
        assert worker.wait() == 0
        worker.wait_stderr("test plugin: shutdown called")
    finally:
        worker.kill()


def test_sigterm_shuts_the_plugin_down_like_eof(libs: dict[str, Path]) -> None:
    worker = Worker(libs["plugin"])
    try:
        worker.hello.result(TIMEOUT)
        assert worker.invoke("echo", {}) == {"method": "echo", "params": {}}
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.wait() == 0
        worker.wait_stderr("test plugin: shutdown called")
    finally:
        worker.kill()


def test_a_host_call_waiting_at_eof_fails_and_the_worker_exits(libs: dict[str, Path]) -> None:
    def never(worker: Worker, msg: dict[str, Any]) -> Any:
        return NO_ANSWER if msg["method"] == "test.wait" else default_handler(worker, msg)

    worker = Worker(libs["plugin"], handler=never)
    try:
        worker.hello.result(TIMEOUT)
        call_id, _ = worker.start_invoke("raw_host_call", {"what": "wait"})
        worker.wait_requests("test.wait")
        worker.close_input()
        assert worker.wait() == 0
        (answer,) = [a for a in worker.answers if a.get("id") == call_id]
        assert answer["result"]["resp"]["error"]["message"] == "hostd connection closed"
    finally:
        worker.kill()


# --- crashes and load errors ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "returncode"), [("crash.segv", -11), ("crash.abort", -6), ("crash.exit", 3)])
def test_a_crash_ends_the_worker_with_its_status(libs: dict[str, Path], method: str, returncode: int) -> None:
    worker = Worker(libs["plugin"])
    try:
        worker.hello.result(TIMEOUT)
        _, pending = worker.start_invoke(method, {})
        assert worker.wait() == returncode
        assert not pending.done()  # no answer: hostd fails the invoke with "plugin disconnected"
    finally:
        worker.kill()


def load_failure(lib: Path | str) -> tuple[int, Worker]:
    worker = Worker(lib)
    try:
        code = worker.wait()
    finally:
        worker.kill()
    assert worker.requests == [] and worker.raw_lines == []  # no hello, nothing on the protocol
    return code, worker


def test_load_error_not_a_library(libs: dict[str, Path]) -> None:
    path = libs["not_a_library"]
    code, worker = load_failure(path)
    assert code == 1
    last = worker.stderr_lines[-1]
    assert last.startswith(f"{LOAD_ERROR_PREFIX}dlopen {path}: {path}: ")
    assert "invalid ELF header" in last or "too short" in last


def test_load_error_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.so"
    code, worker = load_failure(path)
    assert code == 1
    assert worker.stderr_lines[-1] == (
        f"{LOAD_ERROR_PREFIX}dlopen {path}: {path}: cannot open shared object file: No such file or directory"
    )


def test_load_error_missing_init_symbol(libs: dict[str, Path]) -> None:
    path = libs["no_init"]
    code, worker = load_failure(path)
    assert code == 1
    assert (
        worker.stderr_lines[-1]
        == f"{LOAD_ERROR_PREFIX}missing cliproxy_plugin_init: {path}: undefined symbol: cliproxy_plugin_init"
    )


def test_load_error_init_returning_nonzero_calls_shutdown(libs: dict[str, Path]) -> None:
    code, worker = load_failure(libs["init_rc"])
    assert code == 1
    assert worker.stderr_lines[-1] == f"{LOAD_ERROR_PREFIX}cliproxy_plugin_init returned 2"
    assert "test plugin: shutdown called" in worker.stderr_lines  # as the proxy's loader does


def test_load_error_abi_version(libs: dict[str, Path]) -> None:
    code, worker = load_failure(libs["abi2"])
    assert (code, worker.stderr_lines[-1]) == (1, f"{LOAD_ERROR_PREFIX}plugin ABI version 2 is not supported")


def test_load_error_incomplete_table(libs: dict[str, Path]) -> None:
    code, worker = load_failure(libs["incomplete"])
    assert (code, worker.stderr_lines[-1]) == (1, f"{LOAD_ERROR_PREFIX}plugin function table is incomplete")


def test_a_bare_file_name_loads_from_the_working_directory(libs: dict[str, Path], tmp_path: Path) -> None:
    shutil.copy(libs["plugin"], tmp_path / "bare-v2.so")
    worker = Worker("bare-v2.so", cwd=tmp_path)
    try:
        assert worker.hello.result(TIMEOUT)["params"]["plugin_id"] == "bare"
    finally:
        worker.close_input()
        worker.wait()
        worker.kill()


def test_the_worker_imports_nothing_of_the_daemon() -> None:
    code = (
        "import sys, hostd.native.worker; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('hostd', 'httpx', 'httpcore', 'anyio', 'msgspec', 'orjson', 'asyncio'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == [
        "hostd",
        "hostd.native",
        "hostd.native.abi",
        "hostd.native.connection",
        "hostd.native.envelopes",
        "hostd.native.host_calls",
        "hostd.native.naming",
        "hostd.native.plugin_calls",
        "hostd.native.rawjson",
        "hostd.native.worker",
    ]


# --- naming (pure) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "plugin_id"),
    [
        ("my-plugin-v1.2.0.so", "my-plugin"),
        ("x-vnext.so", "x-vnext"),
        ("/opt/plugins/legacy-plugin.so", "legacy-plugin"),
        ("plain.SO", "plain"),
        ("mac-v2.dylib", "mac"),
        ("win-v3.1+build.DLL", "win"),
        ("a-v1-v2.so", "a-v1"),  # the last -v splits
        ("-v1.so", "-v1"),  # nothing before -v: no split (and no valid id: returned as it is)
        ("name-v.so", "name-v"),  # empty version
        ("name-vv1.so", "name-vv1"),  # a version starts with a digit
        ("name-v1_0.so", "name-v1_0"),  # '_' is not a version character
        ("lib.txt", "lib.txt"),  # no library extension
    ],
)
def test_plugin_id_from_the_file_name(file_name: str, plugin_id: str) -> None:
    assert plugin_id_from_path(file_name) == plugin_id


def test_plugin_id_rule() -> None:
    assert valid_plugin_id("a") and valid_plugin_id("A1._-z") and valid_plugin_id("a" * 128)
    assert not valid_plugin_id("a" * 129)
    assert not valid_plugin_id("-a") and not valid_plugin_id(".a") and not valid_plugin_id("")
    assert not valid_plugin_id("a b") and not valid_plugin_id("a\n")  # no trailing-newline match, as in Go
    assert split_versioned_name("my-plugin-v1.2.0.so") == ("my-plugin", "1.2.0")
    assert split_versioned_name("x-vnext.so") == ("x-vnext", "")
    assert split_versioned_name("bad id.so") is None


# --- supervisor policy (pure) ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_to_30_s_and_resets_after_60_s_up() -> None:
    clock = FakeClock()
    sup = NativeSupervisor(clock=clock)
    delays = []
    for _ in range(9):
        sup.started()
        clock.now += 1
        decision = sup.died(-11)
        assert isinstance(decision, Restart)
        delays.append(decision.delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    sup.started()
    clock.now += 60
    decision = sup.died(3)
    assert isinstance(decision, Restart) and decision.delay == 0.5
    sup.started()
    clock.now += 59
    decision = sup.died(3)
    assert isinstance(decision, Restart) and decision.delay == 1.0


def test_a_failed_replay_counts_as_a_crash() -> None:
    sup = NativeSupervisor(clock=FakeClock())
    sup.started()
    first = sup.replay_failed("bad config")
    assert sup.died(-9) is first  # the kill after a failed replay is the same crash, counted once
    sup.started()
    second = sup.died(1)
    assert isinstance(first, Restart) and isinstance(second, Restart)
    assert (first.delay, second.delay) == (0.5, 1.0)
    assert first.reason == "native plugin worker died: replay of plugin.register failed: bad config"


@pytest.mark.parametrize(
    ("returncode", "code", "reason"),
    [
        (-11, 139, "native plugin worker died: signal SIGSEGV"),
        (-6, 134, "native plugin worker died: signal SIGABRT"),
        (3, 3, "native plugin worker died: exit status 3"),
        (0, 0, "native plugin worker died: exit status 0"),
    ],
)
def test_without_restart_the_worker_s_status_is_the_exit_code(returncode: int, code: int, reason: str) -> None:
    sup = NativeSupervisor(restart=False)
    sup.started()
    assert sup.died(returncode) == Exit(code, reason)
    assert describe_death(returncode) == reason


def test_only_a_successful_register_or_reconfigure_is_replayed() -> None:
    sup = NativeSupervisor()
    assert sup.replay_params() is None
    sup.registration_succeeded("management.handle", {"config_yaml": "eA=="})
    assert sup.replay_params() is None
    sup.registration_succeeded(
        "plugin.register", {"config_yaml": "YQ==", "schema_version": 1, "host_callback_id": "cb"}, {"m": 1}
    )
    assert sup.replay_params() == {"config_yaml": "YQ==", "schema_version": 1}
    sup.registration_succeeded("plugin.reconfigure", {"config_yaml": "Yg==", "schema_version": 2}, {"m": 2})
    assert sup.replay_params() == {"config_yaml": "Yg==", "schema_version": 2}
    assert sup.registration == {"m": 2}


def test_load_error_is_found_in_the_worker_s_stderr() -> None:
    lines = ["plugin chatter", f"{LOAD_ERROR_PREFIX}plugin ABI version 2 is not supported\n", "later noise"]
    assert load_error(lines) == "plugin ABI version 2 is not supported"
    assert load_error(["nothing here"]) is None
    assert load_error_in_line(f"{LOAD_ERROR_PREFIX}cliproxy_plugin_init returned 2\n".encode()) == (
        "cliproxy_plugin_init returned 2"
    )
    assert worker_command("/x/p.so", "id")[1:] == ["-m", "hostd.native.worker", "/x/p.so", "--name", "id"]


# --- supervisor driving real workers: crash, restart, replay --------------------------------------


def test_a_crashed_worker_is_restarted_and_its_last_good_registration_replayed(libs: dict[str, Path]) -> None:
    sup = NativeSupervisor(backoff_initial=0.01)
    worker = Worker(libs["plugin"])
    try:
        worker.hello.result(TIMEOUT)
        sup.started()
        sup.ready()
        good = {"config_yaml": b64(b"good: 1\n"), "schema_version": 1}
        result = worker.invoke("plugin.register", good)
        sup.registration_succeeded("plugin.register", good, result)
        bad = {"config_yaml": b64(b"fail"), "schema_version": 1}
        with pytest.raises(RpcError, match="bad config"):
            worker.invoke("plugin.reconfigure", bad)  # failed: not remembered
        _, pending = worker.start_invoke("crash.segv", {})
        decision = sup.died(worker.wait())
        assert not pending.done()
    finally:
        worker.kill()
    assert isinstance(decision, Restart)
    assert (decision.reason, decision.delay) == ("native plugin worker died: signal SIGSEGV", 0.01)
    assert not sup.is_ready
    asyncio.run(sup.wait(decision))

    worker = Worker(libs["plugin"])
    try:
        worker.hello.result(TIMEOUT)
        sup.started()
        replay = sup.replay_params()
        assert replay == good
        replayed = worker.invoke("plugin.register", replay)
        assert (replayed["config_yaml"], replayed["registrations"]) == (good["config_yaml"], 1)
        sup.ready()
        assert worker.invoke("echo", {"after": "restart"}) == {"method": "echo", "params": {"after": "restart"}}
    finally:
        worker.close_input()
        worker.wait()
        worker.kill()


# --- under a real hostd ---------------------------------------------------------------------------
# The worker as `hostd run`'s plugin command (`hostd run -- python -m hostd.native.worker LIB`):
# real host.* handlers, a loopback HTTP upstream, the fake proxy as the model backend, the control
# socket as the host side. (`hostd run --native` adds restarts and replay on top: PROTOCOL §14.)


@contextlib.asynccontextmanager
async def native_run(tmp: Path, lib: Path, *args: str) -> AsyncIterator[tuple[HostdProcess, Client]]:
    hp = await start_run(tmp, *args, cmd=worker_command(str(lib)))
    try:
        async with await hp.connect_control() as ctl:
            yield hp, ctl
    finally:
        await hp.stop(signal.SIGKILL)


async def hostd_invoke(ctl: Client, plugin_id: str, method: str, params: dict[str, Any], **kw: Any) -> Any:
    return await ctl.call("hostd.invoke", {"plugin_id": plugin_id, "method": method, "params": params, **kw}, timeout=T)


@pytest.mark.anyio
async def test_under_hostd_management_handle_reaches_upstream_and_the_model_backend(
    libs: dict[str, Path], short_tmp: Path, upstream: Upstream, proxy: FakeProxy
) -> None:
    @upstream.route("/hello")
    async def hello(_: UpstreamRequest) -> Response:
        return Response(200, [("Content-Type", "text/plain")], b"upstream says hi")

    async with native_run(short_tmp, libs["plugin"], "--model-base-url", proxy.url) as (hp, ctl):
        answer = await hostd_invoke(ctl, "native-test", "management.handle", {"url": f"{upstream.url}/hello"})
        result = answer["result"]
        scope = result["host_callback_id"]
        assert scope  # hostd's scope, set in the params it sent the plugin
        assert result["http"]["result"]["StatusCode"] == 200
        assert unb64(result["http"]["result"]["Body"]) == b"upstream says hi"
        assert result["model"]["result"]["status_code"] == 200
        assert result["reads"][-1]["result"]["done"] is True
        assert result["close"] == {"ok": True, "result": {}}
        assert [r.path for r in upstream.requests] == ["/hello"]
        (received,) = proxy.received
        assert received.path == "/v1/chat/completions"
        assert received.header("X-CPA-Host-Callback-ID") == scope
        assert received.header("X-CPA-Skip-Plugin") == "native-test"
        line = json.loads(await hp.wait_log('"msg":"native management"'))
        assert (line["plugin"], line["k"]) == ("native-test", "v")


@pytest.mark.anyio
async def test_under_hostd_an_executor_streams_from_its_own_thread_and_inline(
    libs: dict[str, Path], short_tmp: Path
) -> None:
    async with native_run(short_tmp, libs["plugin"]) as (_hp, ctl):
        answer = await hostd_invoke(ctl, "native-test", "executor.execute_stream", {}, stream=True)
        reads = await read_emit_stream(ctl, answer["stream_id"], T)
        assert [unb64(r["payload"]) for r in reads[:-1]] == [b"one", b"two", b"three"]
        assert reads[-1] == {"payload": None, "error": "", "done": True}
        answer = await hostd_invoke(ctl, "native-test", "executor.execute_stream", {"inline": 1}, stream=True)
        assert answer["result"] == {}
        reads = await read_emit_stream(ctl, answer["stream_id"], T)
        assert reads == [
            {"payload": b64(b"hello"), "error": "", "done": False},
            {"payload": b64(b" world"), "error": "", "done": False},
            {"payload": None, "error": "the end", "done": True},
        ]


@pytest.mark.anyio
async def test_under_hostd_a_hung_call_times_out_and_the_worker_serves_on(
    libs: dict[str, Path], short_tmp: Path
) -> None:
    async with native_run(short_tmp, libs["plugin"]) as (_hp, ctl):
        pid = (await ctl.call("hostd.status", {}, timeout=T))["sessions"][0]["peer_pid"]
        hung = asyncio.ensure_future(hostd_invoke(ctl, "native-test", "hang", {}, timeout_s=1))
        assert await hostd_invoke(ctl, "native-test", "echo", {"n": 1}) == {
            "result": {"method": "echo", "params": {"n": 1, "host_callback_id": ANY_STR}}
        }
        with pytest.raises(RpcError_, match="plugin call timed out"):
            await hung
        assert (await hostd_invoke(ctl, "native-test", "echo", {}))["result"]["method"] == "echo"
        sessions = (await ctl.call("hostd.status", {}, timeout=T))["sessions"]
        assert [s["peer_pid"] for s in sessions if s["plugin_id"] == "native-test"] == [pid]


@pytest.mark.anyio
async def test_under_hostd_what_the_plugin_prints_becomes_log_lines(libs: dict[str, Path], short_tmp: Path) -> None:
    async with native_run(short_tmp, libs["plugin"]) as (hp, ctl):
        assert (await hostd_invoke(ctl, "native-test", "print", {}))["result"] == {"printed": True}
        for text in ("printed by the plugin on stdout", "written to fd 1"):
            line = json.loads(await hp.wait_log(text))
            assert (line["msg"], line["plugin"], line["source"]) == (text, "native-test", "stderr")
        assert (await hostd_invoke(ctl, "native-test", "echo", {}))["result"]["method"] == "echo"


@pytest.mark.anyio
async def test_under_hostd_a_segfault_fails_the_invoke_and_hostd_exits_with_the_signal(
    libs: dict[str, Path], short_tmp: Path
) -> None:
    async with native_run(short_tmp, libs["plugin"]) as (hp, ctl):
        with pytest.raises(RpcError_, match="plugin disconnected"):
            await hostd_invoke(ctl, "native-test", "crash.segv", {})
        async with asyncio.timeout(T):
            code = await hp.proc.wait()
        assert code == 128 + signal.SIGSEGV  # as `hostd run --native --restart no` exits
        await hp.wait_log('"signal":"SIGSEGV"')


@pytest.mark.anyio
async def test_under_hostd_a_go_plugin_logs_from_several_goroutines(golib: Path, short_tmp: Path) -> None:
    async with native_run(short_tmp, golib) as (hp, ctl):
        answer = await hostd_invoke(ctl, "go-native", "management.handle", {"n": 4})
        assert answer["result"]["results"] == [{}, {}, {}, {}]
        for i in range(4):
            line = json.loads(await hp.wait_log(f'"msg":"goroutine {i}"'))
            assert line["plugin"] == "go-native"


# --- hostd run --native: load errors, restart and replay, --restart no --------------------------------


async def start_native(tmp: Path, lib: Path, *args: str, ready: str = '"hello plugin"') -> HostdProcess:
    return await start_run(tmp, *args, native=lib, ready=ready)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("lib", "text"),
    [
        ("abi2", "plugin ABI version 2 is not supported"),
        ("init_rc", "cliproxy_plugin_init returned 2"),
        ("incomplete", "plugin function table is incomplete"),
        ("no_init", "missing cliproxy_plugin_init: {path}: undefined symbol: cliproxy_plugin_init"),
    ],
)
async def test_native_load_errors_end_hostd_run_with_1_and_the_proxy_s_words(
    libs: dict[str, Path], short_tmp: Path, lib: str, text: str
) -> None:
    path = libs[lib]
    hp = await start_native(short_tmp, path, ready='"hostd ready"')
    try:
        async with asyncio.timeout(T):
            assert await hp.proc.wait() == 1
    finally:
        await hp.stop(signal.SIGKILL)
    words = text.format(path=path)
    line = json.loads(await hp.wait_log('"msg":"cannot load native plugin"'))
    assert line["error"] == words
    # printed for the operator too, at the start of a line (the log writer's thread may append to it)
    assert any(entry.startswith(f"hostd: {words}") for entry in hp.stderr_lines)


@pytest.mark.anyio
async def test_native_crash_restarts_the_worker_and_replays_the_last_good_registration(
    libs: dict[str, Path], short_tmp: Path
) -> None:
    hp = await start_native(short_tmp, libs["plugin"])
    try:
        async with await hp.connect_control() as ctl:
            good = {"config_yaml": b64(b"good: 1\n"), "schema_version": 1}
            await hostd_invoke(ctl, "native-test", "plugin.register", good)
            with pytest.raises(RpcError_, match="bad config"):
                await hostd_invoke(ctl, "native-test", "plugin.reconfigure", {"config_yaml": b64(b"fail")})
            first = (await hostd_invoke(ctl, "native-test", "whoami", {}))["result"]
            with pytest.raises(RpcError_, match="plugin disconnected") as crashed:
                await hostd_invoke(ctl, "native-test", "crash.segv", {})
            assert crashed.value.data.get("retryable") is True
            await hp.wait_log("native plugin worker died: signal SIGSEGV")
            assert "sessions" in await ctl.call("hostd.status", {}, timeout=T)  # the daemon serves on
            await hp.wait_log('"msg":"plugin.register replayed"', timeout=T)
            again = (await hostd_invoke(ctl, "native-test", "whoami", {}))["result"]
            assert again["pid"] != first["pid"]
            assert (again["registrations"], again["config_yaml"]) == (1, good["config_yaml"])
            assert (await hostd_invoke(ctl, "native-test", "echo", {"n": 1}))["result"]["params"]["n"] == 1
    finally:
        await hp.stop(signal.SIGKILL)


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "code"), [("crash.segv", 139), ("crash.abort", 134), ("crash.exit", 3)])
async def test_native_restart_no_exits_with_the_worker_s_status(
    libs: dict[str, Path], short_tmp: Path, method: str, code: int
) -> None:
    hp = await start_native(short_tmp, libs["plugin"], "--restart", "no")
    try:
        async with await hp.connect_control() as ctl:
            with pytest.raises(RpcError_, match="plugin disconnected"):
                await hostd_invoke(ctl, "native-test", method, {})
        async with asyncio.timeout(T):
            assert await hp.proc.wait() == code
    finally:
        await hp.stop(signal.SIGKILL)
