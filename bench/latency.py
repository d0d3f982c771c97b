"""Latency under heavy requests (issue 10, PROTOCOL §11): a victim session's ``hostd.hello``
p50/p99 while another session sends the largest request of every method the limits allow.

Three processes besides hostd, so none of them steals the others' interpreter:

- the **victim** (``python -m bench.latency victim SOCK``): one session, ``hostd.hello``
  back to back; it times only the calls made between ``start`` and ``stop`` on its stdin,
  then prints their percentiles;
- the **sink** (``python -m bench.latency sink``): a loopback HTTP/1.1 server that reads
  each request body to its end and answers ``200 {}`` (the target of ``host.http.do`` and
  of the model backend);
- the **heavy sender** (this process): each heavy request in turn, each repeated, waiting
  for its answer (a plugin that sends only heavy calls).

Heavy requests, each one line of at most ``max_line_bytes`` (16 MiB, the default):
``host.log`` with 16 MiB of fields, ``host.auth.save`` of a credential just under
``auth.max_file_bytes`` (1 MiB, saved) and of a near-16 MiB one (refused ``auth file is too
large``), ``host.http.do`` / ``do_stream`` and ``host.model.execute`` with the largest body a
16 MiB line holds (12 MiB once base64-decoded) to the sink, a batch of ``max_batch`` (1024)
``host.log`` calls filling the line, and a line of values nested 200 deep (legal) filling it.
Then the hostile shapes of the same size that used to hold the loop longest: unknown keys in
params, a junk member nested deep, a deep value where a string belongs, one field spelled a
million ways, invalid JSON after megabytes of nesting, and a batch whose elements are full of
unknown keys. The goal is p99 ≤ 100 ms over all of them. This is a benchmark, not a test: no
figure is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from bench.common import (
    PY,
    BenchError,
    Settings,
    child_env,
    has_module,
    hostd_argv,
    hostd_source,
    running,
    short_tmpdir,
    wait_for_socket,
)

MiB = 1024 * 1024
LINE = 16 * MiB  # max_line_bytes, the default
AUTH_MAX = 1 * MiB  # auth.max_file_bytes, the default
BATCH = 1024  # limits.max_batch
DEPTH = 200  # nesting well inside every decoder's limit
GOAL_P99_MS = 100.0


def loops() -> list[str]:
    return ["asyncio", "uvloop"] if has_module("uvloop") else ["asyncio"]


def repeats(settings: Settings) -> int:
    """How many times each heavy request is sent."""
    return {"full": 5, "quick": 2}.get(settings.name, 1)


# The heavy requests ---------------------------------------------------------------------


def _request(method: str, params: dict[str, Any], rid: int = 1) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})


def _fill(make: Callable[[int], bytes], limit: int) -> bytes:
    """``make(n)`` for (nearly) the largest ``n`` whose line stays within ``limit`` bytes;
    ``make`` grows about linearly with ``n``."""
    base, probe = len(make(0)), 4096
    slope = max(1e-9, (len(make(probe)) - base) / probe)
    n = max(0, int((limit - base) / slope))
    line = make(n)
    while len(line) > limit and n > 0:
        n = int(n * limit / len(line) * 0.9995) - 1
        line = make(n)
    return line


def heavy_requests(sink_url: str, tiny: bool) -> dict[str, bytes]:
    """Each heavy request as one line (without its newline)."""
    limit = LINE // 64 if tiny else LINE
    auth_max = AUTH_MAX // 64 if tiny else AUTH_MAX

    def log_fields(n: int) -> bytes:
        fields: dict[str, Any] = {"blob": "x" * (n // 2), **{f"k{i}": i for i in range(n // 64)}}
        return _request("host.log", {"level": "info", "message": "heavy", "fields": fields})

    def credential(n: int) -> bytes:
        return _request("host.auth.save", {"name": "heavy.json", "json": {"type": "claude", "pad": "p" * n}})

    def http_body(method: str) -> Callable[[int], bytes]:
        def make(n: int) -> bytes:
            body = base64.b64encode(b"b" * n).decode()
            return _request(method, {"method": "POST", "url": sink_url + "/sink", "body": body})

        return make

    def model_body(n: int) -> bytes:
        body = base64.b64encode(b"m" * n).decode()
        return _request("host.model.execute", {"entry_protocol": "openai", "model": "m", "body": body})

    def batch_element(n: int) -> bytes:
        return _request("host.log", {"level": "info", "message": "b", "fields": {"f": "y" * n}})

    nested = b"[" * DEPTH + b"1" + b"]" * DEPTH

    def deep(n: int) -> bytes:
        head = b'{"jsonrpc":"2.0","id":1,"method":"host.log","params":{"level":"info","message":"deep","fields":{"d":['
        return head + b",".join([nested] * n) + b"]}}}"

    def log_params(inner: bytes) -> bytes:
        return b'{"jsonrpc":"2.0","id":1,"method":"host.log","params":{' + inner + b"}}"

    def deep_list(n: int) -> bytes:
        return b"[" + b",".join([nested] * n) + b"]"

    def junk_keys(n: int) -> bytes:
        return log_params(b'"level":"info",' + b",".join(b'"k%07d":0' % i for i in range(n)))

    def spellings(n: int) -> bytes:
        return log_params(b",".join([b'"LEVEL":"info"'] * n))

    def invalid(n: int) -> bytes:
        return log_params(b'"fields":' + deep_list(n) + b",,")

    def element(n: int) -> bytes:
        return log_params(b'"level":"info",' + b",".join(b'"k%05d":0' % i for i in range(n)))

    # The credential's own bytes (the json value) just under auth.max_file_bytes: saved.
    envelope = len(credential(0)) - len(b'{"type":"claude","pad":""}')
    one = batch_element(0)
    return {
        "host.log, 16 MiB of fields": _fill(log_fields, limit),
        "host.auth.save, 1 MiB credential (saved)": _fill(credential, auth_max + envelope - 16),
        "host.auth.save, 16 MiB credential (refused)": _fill(credential, limit),
        "host.http.do, 12 MiB body": _fill(http_body("host.http.do"), limit),
        "host.http.do_stream, 12 MiB body": _fill(http_body("host.http.do_stream"), limit),
        "host.model.execute, 12 MiB body": _fill(model_body, limit),
        f"batch of {BATCH} host.log": b"[" + b",".join([_fill(batch_element, limit // BATCH - 2)] * BATCH) + b"]"
        if len(one) < limit // BATCH
        else one,
        f"nesting {DEPTH} deep, whole line": _fill(deep, limit),
        "hostile: unknown keys in params": _fill(junk_keys, limit),
        f"hostile: a junk member {DEPTH} deep": _fill(lambda n: log_params(b'"junk":' + deep_list(n)), limit),
        f"hostile: {DEPTH} deep where a string belongs": _fill(lambda n: log_params(b'"level":' + deep_list(n)), limit),
        "hostile: one key spelled a million ways": _fill(
            lambda n: log_params(b",".join([b'"LEVEL":"info"'] * n)), limit
        ),
        "hostile: invalid JSON after the nesting": _fill(
            lambda n: log_params(b'"fields":' + deep_list(n) + b",,"), limit
        ),
        f"hostile: batch of {BATCH} full of unknown keys": b"["
        + b",".join([_fill(element, limit // BATCH - 2)] * BATCH)
        + b"]",
    }


# The victim -------------------------------------------------------------------------------


INTERVAL_S = 0.001  # the victim's schedule: one hostd.hello per millisecond


def _percentiles(samples: list[float], calls: int | None = None) -> dict[str, float]:
    samples.sort()
    n = len(samples)
    return {
        **({} if calls is None else {"calls": calls}),
        "samples": n,
        "p50_ms": samples[n // 2] * 1e3 if n else 0.0,
        "p99_ms": samples[min(n - 1, (n * 99) // 100)] * 1e3 if n else 0.0,
        "max_ms": samples[-1] * 1e3 if n else 0.0,
    }


def victim(sock_path: str) -> None:
    """``hostd.hello`` on a fixed schedule (one per ``INTERVAL_S``), timed between ``start``
    and ``stop`` lines on stdin.

    Latency is measured from each call's *scheduled* time, and a call that is late stands
    for every scheduled call it delayed (coordinated omission corrected): a loop held for
    1 s shows as 1,000 late samples, not as one slow call among thousands of fast ones.
    """
    import selectors

    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sock_path)
    conn.settimeout(60)
    reader = conn.makefile("rb")
    request = b'{"jsonrpc":"2.0","id":1,"method":"hostd.hello"}\n'
    timing = False
    samples: list[float] = []
    calls = 0
    buckets: dict[str, list[float]] = {}  # samples per heavy request (``mark NAME`` lines)
    bucket: list[float] = []
    control = sys.stdin.buffer
    sel = selectors.DefaultSelector()
    sel.register(control, selectors.EVENT_READ)
    print("ready", flush=True)
    due = time.perf_counter()
    while True:
        for _key, _ in sel.select(timeout=0):
            word = control.readline().strip()
            if word == b"start":
                timing, samples, calls, buckets, bucket = True, [], 0, {}, []
                due = time.perf_counter()
                print("started", flush=True)
            elif word.startswith(b"mark "):
                bucket = buckets.setdefault(word[5:].decode(), [])
                print("marked", flush=True)  # the sender waits for this before its next request
            elif word in (b"stop", b""):
                stats: dict[str, Any] = _percentiles(samples, calls)
                stats["during"] = {name: _percentiles(b) for name, b in buckets.items()}
                print(orjson.dumps(stats).decode(), flush=True)
                return
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        conn.sendall(request)
        if not reader.readline():
            raise SystemExit("hostd closed the victim's session")
        done = time.perf_counter()
        if timing:
            calls += 1
            while due <= done:  # this call, and every scheduled call it held up
                samples.append(done - due)
                bucket.append(done - due)
                due += INTERVAL_S
        else:
            due = max(due + INTERVAL_S, done)


# The sink ---------------------------------------------------------------------------------


class _Sink(asyncio.Protocol):
    """Reads a request (Content-Length or chunked body) to its end, answers ``200 {}``."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.need = -1  # body bytes still to read; -1: reading a head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).lower()
                del self.buf[: end + 4]
                self.need = 0
                for line in head.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        self.need = int(line.split(b":", 1)[1])
                if b"transfer-encoding: chunked" in head:
                    self.need = -2
            if self.need == -2:  # chunked: wait for the last chunk
                end = self.buf.find(b"\r\n0\r\n\r\n")
                if end < 0 and not self.buf.startswith(b"0\r\n\r\n"):
                    if len(self.buf) > 64:
                        del self.buf[:-64]
                    return
                self.buf.clear()
                self.need = 0
            if len(self.buf) < self.need:
                self.need -= len(self.buf)
                self.buf.clear()
                return
            del self.buf[: self.need]
            self.need = -1
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")


def sink() -> None:
    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_Sink, "127.0.0.1", 0)
        print(orjson.dumps({"port": server.sockets[0].getsockname()[1]}).decode(), flush=True)
        await asyncio.get_running_loop().connect_read_pipe(asyncio.Protocol, sys.stdin)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


# The run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _child(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [PY, "-m", "bench.latency", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(),
        cwd=hostd_source(),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _line(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise BenchError(f"{proc.args!r} exited with {proc.wait()}")
    return line.strip()


def _send_heavy(
    sock_path: str, lines: dict[str, bytes], times: int, mark: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Each heavy request ``times`` times on one session, one at a time: what each answered."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sock_path)
    conn.settimeout(120)
    reader = conn.makefile("rb")
    out: dict[str, dict[str, Any]] = {}
    for name, line in lines.items():
        mark(name)
        elapsed: list[float] = []
        answer: Any = None
        for _ in range(times):
            started = time.perf_counter()
            conn.sendall(line + b"\n")
            data = reader.readline()
            elapsed.append(time.perf_counter() - started)
            answer = orjson.loads(data)
        first = answer[0] if isinstance(answer, list) else answer
        if isinstance(first, dict) and "result" in first and isinstance(first["result"], dict):
            sid = first["result"].get("stream_id")
            if sid:  # do_stream: close what it opened
                conn.sendall(_request("host.http.stream_close", {"stream_id": sid}, 2) + b"\n")
                reader.readline()
        outcome = "ok" if "result" in first else f"error {first['error']['code']}: {first['error']['message'][:60]}"
        out[name] = {"line_bytes": len(line), "outcome": outcome, "ms_best": min(elapsed) * 1e3}
    conn.close()
    return out


def _one_loop(loop: str, settings: Settings) -> dict[str, Any]:
    tiny = settings.name == "tiny"
    with short_tmpdir() as tmp, _child("sink") as sink_proc:
        port = orjson.loads(_line(sink_proc))["port"]
        sink_url = f"http://127.0.0.1:{port}"
        auth = tmp / "auth"
        auth.mkdir()
        sock = tmp / "hostd.sock"
        extra = ["--auth-dir", str(auth), "--model-base-url", sink_url]
        lines = heavy_requests(sink_url, tiny)
        argv = hostd_argv(listen=f"unix:{sock}", loop=loop, log_level="info", extra=extra)
        with running(argv, socket_path=sock) as hostd, _child("victim", str(sock)) as vic:
            wait_for_socket(sock, hostd)
            assert vic.stdin is not None
            if _line(vic) != b"ready":
                raise BenchError("the victim did not start")
            idle: dict[str, Any] = {}
            # Each family's first call imports its modules (on the loop, once): not measured.
            _send_heavy(str(sock), heavy_requests(sink_url, tiny=True), 1, lambda _name: None)
            vic.stdin.write(b"start\n")
            vic.stdin.flush()
            _line(vic)

            def mark(name: str) -> None:
                assert vic.stdin is not None
                vic.stdin.write(b"mark " + name.encode() + b"\n")
                vic.stdin.flush()
                if _line(vic) != b"marked":
                    raise BenchError("the victim lost count")

            heavy = _send_heavy(str(sock), lines, repeats(settings), mark)
            vic.stdin.write(b"stop\n")
            vic.stdin.flush()
            under_load = orjson.loads(_line(vic))
        # The same victim with nothing else going on: the floor the figure compares with.
        with running(argv, socket_path=sock) as hostd, _child("victim", str(sock)) as vic:
            assert vic.stdin is not None
            _line(vic)
            vic.stdin.write(b"start\n")
            vic.stdin.flush()
            _line(vic)
            time.sleep(0.5 if tiny else 2.0)  # the victim measures for this long (a bench, not a test)
            vic.stdin.write(b"stop\n")
            vic.stdin.flush()
            idle = orjson.loads(_line(vic))
    for name, during in under_load.pop("during").items():
        heavy[name]["victim"] = during
    return {"under_load": under_load, "idle": idle, "heavy": heavy, "repeats": repeats(settings)}


def run(settings: Settings) -> dict[str, Any]:
    return {"goal_p99_ms": GOAL_P99_MS, "loops": {loop: _one_loop(loop, settings) for loop in loops()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency")
    sub = parser.add_subparsers(dest="role", required=True)
    v = sub.add_parser("victim")
    v.add_argument("socket")
    sub.add_parser("sink")
    args = parser.parse_args(argv)
    if args.role == "victim":
        victim(args.socket)
    else:
        sink()


if __name__ == "__main__":
    main()
