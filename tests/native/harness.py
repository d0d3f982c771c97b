"""Play hostd's side of the plugin protocol against a real native worker process over real pipes.

The worker (``python -m hostd.native.worker LIB.so``) is spawned with pipes; a reader thread
parses every line it writes on stdout (each must be one JSON object: anything else fails the test),
resolves the answers to our invokes by id and hands the worker's own requests (``hostd.hello``,
``host.*``) to a handler that runs on a thread of its own, so handlers may block (barriers) without
stopping the reader. Nothing here sleeps: every wait is on an event or a future with a timeout.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

TIMEOUT = 20.0
REPO = Path(__file__).resolve().parents[2]

Handler = Callable[["Worker", dict[str, Any]], Any]


class NoAnswer:
    """A handler's return value meaning "do not answer (yet)"."""


NO_ANSWER = NoAnswer()


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


def default_handler(worker: Worker, msg: dict[str, Any]) -> Any:
    if msg["method"] == "hostd.hello":
        return {"server": "hostd", "schema_version": 3, "session": "s-1"}
    return {}


class Worker:
    def __init__(
        self, lib: Path | str, *args: str, handler: Handler = default_handler, cwd: Path | None = None
    ) -> None:
        self.handler = handler
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hostd.native.worker", str(lib), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd or REPO,
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[Any, Future[dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []  # every request the worker sent, in order
        self.answers: list[dict[str, Any]] = []  # every answer the worker sent, in order
        self.raw_lines: list[bytes] = []
        self.bad_lines: list[bytes] = []
        self.stderr_lines: list[str] = []
        self._stderr_changed = threading.Condition()
        self._request_changed = threading.Condition()
        self.stdout_closed = threading.Event()
        self.hello: Future[dict[str, Any]] = Future()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- hostd → worker --

    def send(self, msg: dict[str, Any]) -> None:
        self.send_raw(json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def start_invoke(self, method: str, params: dict[str, Any] | None = None) -> tuple[str, Future[dict[str, Any]]]:
        request_id = f"hostd-{next(self._ids)}"
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            self._waiting[request_id] = future
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return request_id, future

    def expect(self, request_id: Any) -> Future[dict[str, Any]]:
        """A future for the answer to a request this side sends itself (``send_raw``)."""
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            self._waiting[request_id] = future
        return future

    def invoke_answer(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        _, future = self.start_invoke(method, {} if params is None else params)
        return future.result(TIMEOUT)

    def invoke(self, method: str, params: dict[str, Any] | None = None) -> Any:
        answer = self.invoke_answer(method, params)
        if "error" in answer:
            raise RpcError(answer["error"])
        return answer["result"]

    def cancel(self, request_id: str) -> None:
        self.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": request_id}})

    def answer(self, msg: dict[str, Any], result: Any = None, error: dict[str, Any] | None = None) -> None:
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": msg["id"]}
        if error is not None:
            out["error"] = error
        else:
            out["result"] = result
        self.send(out)

    def close_input(self) -> None:
        assert self.proc.stdin is not None
        with self._lock, contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()

    def wait(self, timeout: float = TIMEOUT) -> int:
        code = self.proc.wait(timeout)
        self.stdout_closed.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        return code

    def kill(self) -> None:
        """Make sure the process is gone and every pipe closed (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    # -- worker → hostd --

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            for raw in self.proc.stdout:
                self.raw_lines.append(raw)
                try:
                    msg = json.loads(raw)
                    assert isinstance(msg, dict) and raw.endswith(b"\n")
                except (ValueError, AssertionError):
                    self.bad_lines.append(raw)
                    continue
                if "method" in msg:
                    with self._request_changed:
                        self.requests.append(msg)
                        self._request_changed.notify_all()
                    if msg["method"] == "hostd.hello" and not self.hello.done():
                        self.hello.set_result(msg)
                    threading.Thread(target=self._handle, args=(msg,), daemon=True).start()
                else:
                    self.answers.append(msg)
                    with self._lock:
                        future = self._waiting.pop(msg.get("id"), None)
                    if future is not None:
                        future.set_result(msg)
        finally:
            self.stdout_closed.set()

    def _handle(self, msg: dict[str, Any]) -> None:
        try:
            result = self.handler(self, msg)
        except RpcError as exc:
            self.answer(msg, error=exc.error)
            return
        except BrokenPipeError:
            return
        if result is NO_ANSWER or "id" not in msg:
            return
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.answer(msg, result)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._stderr_changed:
                self.stderr_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._stderr_changed.notify_all()

    def wait_stderr(self, text: str, timeout: float = TIMEOUT) -> str:
        def found() -> str | None:
            return next((line for line in self.stderr_lines if text in line), None)

        with self._stderr_changed:
            assert self._stderr_changed.wait_for(lambda: found() is not None, timeout), (text, self.stderr_lines)
            line = found()
            assert line is not None
            return line

    def wait_requests(self, method: str, count: int = 1, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        def matching() -> list[dict[str, Any]]:
            return [m for m in self.requests if m["method"] == method]

        with self._request_changed:
            assert self._request_changed.wait_for(lambda: len(matching()) >= count, timeout), (method, self.requests)
            return matching()


@contextlib.contextmanager
def running(lib: Path | str, *args: str, handler: Handler = default_handler) -> Iterator[Worker]:
    worker = Worker(lib, *args, handler=handler)
    try:
        worker.hello.result(TIMEOUT)
        yield worker
    finally:
        worker.close_input()
        try:
            worker.wait()
        finally:
            worker.kill()
        assert worker.bad_lines == [], worker.bad_lines


def build_c(source: Path, out: Path, *defines: str) -> Path:
    """``cc -shared -fPIC -pthread`` into ``out``; the output names the failure when it fails."""
    cmd = ["cc", "-shared", "-fPIC", "-pthread", "-O1", "-o", str(out), str(source), *(f"-D{d}" for d in defines)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out
