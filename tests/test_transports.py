"""hostd serve: stdio and Unix-socket transports, socket files, exit codes, signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import orjson
import pytest

import hostd
from tests.support.hostd_proc import HOSTD, running_hostd, start_hostd

pytestmark = pytest.mark.anyio


async def test_stdio_session_answers_on_stdout_and_logs_on_stderr(short_tmp: Path) -> None:
    hp = await start_hostd(short_tmp, stdio=True)
    c = hp.stdio_client()
    try:
        assert await c.call("host.log", {"level": "info", "message": "to stderr"}, timeout=5) == {}
        line = await hp.wait_log('"msg":"to stderr"')
        assert orjson.loads(line)["level"] == "info"
    finally:
        assert hp.proc.stdin is not None
        hp.proc.stdin.close()  # EOF ends a stdio session, and with it hostd
        async with asyncio.timeout(10):
            assert await hp.proc.wait() == 0
        await c.aclose()


async def test_stdio_answers_in_flight_calls_after_eof() -> None:
    """EOF stops reading but in-flight calls still finish and get answered."""
    lines = b"".join(
        orjson.dumps({"jsonrpc": "2.0", "id": i, "method": "host.log", "params": {"message": str(i)}}) + b"\n"
        for i in range(50)
    )
    proc = await asyncio.create_subprocess_exec(
        *HOSTD, "serve", "--auth-dir", "", "--model-base-url", "",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(15):
        out, _ = await proc.communicate(lines)
    answers = [orjson.loads(x) for x in out.splitlines()]
    assert sorted(a["id"] for a in answers) == list(range(50))
    assert proc.returncode == 0


async def test_stdio_reads_requests_from_a_regular_file(tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b'{"jsonrpc":"2.0","id":1,"method":"host.log"}\n')
    with requests.open("rb") as stdin:
        proc = await asyncio.create_subprocess_exec(
            *HOSTD, "serve", "--auth-dir", "", "--model-base-url", "",
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        async with asyncio.timeout(15):
            out, _ = await proc.communicate()
    assert orjson.loads(out) == {"jsonrpc": "2.0", "id": 1, "result": {}}


async def test_socket_is_created_0600_and_removed_on_exit(short_tmp: Path) -> None:
    hp = await start_hostd(short_tmp)
    assert hp.socket is not None
    st = os.stat(hp.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert await hp.stop() == 0
    assert not os.path.exists(hp.socket)


async def test_socket_mode_flag(short_tmp: Path) -> None:
    async with running_hostd(short_tmp, "--socket-mode", "0660") as hp:
        assert hp.socket is not None
        assert stat.S_IMODE(os.stat(hp.socket).st_mode) == 0o660


async def test_stale_socket_file_is_replaced(short_tmp: Path) -> None:
    path = short_tmp / "hostd.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a dead daemon's socket
    async with running_hostd(short_tmp) as hp, await hp.connect() as c:
        assert await c.call("host.log", timeout=5) == {}


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HOSTD, "serve", "--auth-dir", "", "--model-base-url", "", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


async def test_live_socket_is_refused_with_exit_1(short_tmp: Path) -> None:
    async with running_hostd(short_tmp) as hp:
        result = await asyncio.to_thread(run_serve, "--listen", f"unix:{hp.socket}")
        assert result.returncode == 1
        assert "in use by a running server" in result.stderr
        async with await hp.connect() as c:  # the first daemon still serves
            assert await c.call("host.log", timeout=5) == {}


async def test_socket_path_over_the_os_limit_is_a_clear_error(short_tmp: Path) -> None:
    long_path = short_tmp / ("x" * 120 + ".sock")
    result = await asyncio.to_thread(run_serve, "--listen", f"unix:{long_path}")
    assert result.returncode == 1
    assert "socket path is too long" in result.stderr


async def test_a_regular_file_at_the_socket_path_is_not_replaced(short_tmp: Path) -> None:
    path = short_tmp / "precious"
    path.write_text("keep me")
    result = await asyncio.to_thread(run_serve, "--listen", f"unix:{path}")
    assert result.returncode == 1
    assert "is not a socket" in result.stderr
    assert path.read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-in-flight", "0"], "max_in_flight"),
        (["--log-level", "loud"], "log_level"),
        (["--listen", "tcp:1234"], None),
        (["--socket-mode", "999"], "socket_mode"),
    ],
)
async def test_bad_configuration_exits_2_or_1_with_the_key(args: list[str], message: str | None) -> None:
    result = await asyncio.to_thread(run_serve, *args)
    if message is None:
        assert result.returncode == 1
        assert "expected unix:PATH" in result.stderr
    else:
        assert result.returncode == 2
        assert message in result.stderr


async def test_bad_config_file_names_key(tmp_path: Path) -> None:
    config = tmp_path / "hostd.toml"
    config.write_text('[limits]\nmax_streams = "many"\n')
    result = await asyncio.to_thread(run_serve, "--config", str(config))
    assert result.returncode == 2
    assert "$.limits.max_streams" in result.stderr


async def test_sigterm_waits_for_in_flight_calls_within_grace(short_tmp: Path) -> None:
    from tests.support.upstream import Request, Response, Upstream

    upstream = await Upstream().start()
    release = asyncio.Event()

    @upstream.route("/slow")
    async def slow(_: Request) -> Response:
        await release.wait()
        return Response(200, body=b"late")

    try:
        hp = await start_hostd(short_tmp, "--shutdown-grace", "10")
        async with await hp.connect() as c:
            pending = asyncio.ensure_future(c.call("host.http.do", {"url": upstream.url + "/slow"}, timeout=15))
            await upstream.wait_for(lambda: len(upstream.requests) == 1)
            hp.proc.send_signal(signal.SIGTERM)
            await hp.wait_log("hostd stopping")
            release.set()
            result = await pending
            assert result["StatusCode"] == 200
        async with asyncio.timeout(15):
            assert await hp.proc.wait() == 0  # it exits by itself once the call is answered
    finally:
        await upstream.stop()


def test_version() -> None:
    out = subprocess.run([*HOSTD, "--version"], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == f"hostd {hostd.__version__}"
