"""``hostd run -- CMD``: one plugin process on hostd's session over its stdio (PROTOCOL.md §12)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hostd.client import Client
from tests.support.hostd_proc import HOSTD, HostdProcess
from tests.support.plugins import EXECUTOR, scripted, start_run

pytestmark = pytest.mark.anyio

T = 10.0


@contextlib.asynccontextmanager
async def running(tmp: Path, *args: str, cmd: list[str]) -> AsyncIterator[HostdProcess]:
    hp = await start_run(tmp, *args, cmd=cmd)
    try:
        yield hp
    finally:
        await hp.stop(signal.SIGKILL)


async def invoke(ctl: Client, plugin_id: str, method: str, params: dict[str, Any] | None = None) -> Any:
    request = {"plugin_id": plugin_id, "method": method, "params": params or {}}
    return (await ctl.call("hostd.invoke", request, timeout=T))["result"]


async def wait_exit(hp: HostdProcess, timeout: float = T) -> int:
    async with asyncio.timeout(timeout):
        return await hp.proc.wait()


async def wait_gone(pid: int, timeout: float = T) -> None:
    """Wait (on a pidfd, not by polling) until process ``pid`` has exited."""
    pidfd = os.pidfd_open(pid)
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(pidfd, exited.set)
    try:
        async with asyncio.timeout(timeout):
            await exited.wait()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in (b"Z", b"X")


async def test_run_serves_an_executor_plugin_on_its_stdio(short_tmp: Path) -> None:
    stream_call = {"plugin_id": "example-executor", "method": "executor.execute_stream", "stream": True}
    async with (
        running(short_tmp, "--name", "example-executor", cmd=[sys.executable, str(EXECUTOR)]) as hp,
        await hp.connect_control() as ctl,
    ):
        answer = await ctl.call("hostd.invoke", {**stream_call, "params": {"count": 30}}, timeout=T)
        reads: list[dict[str, Any]] = []
        while not reads or not reads[-1]["done"]:
            reads.append(await ctl.call("hostd.stream.read", {"stream_id": answer["stream_id"]}, timeout=T))
        echo = await invoke(ctl, "example-executor", "executor.execute", {"prompt": "hello"})
        status = await ctl.call("hostd.status", {}, timeout=T)
    assert [base64.b64decode(r["payload"]).decode() for r in reads[:-1]] == [f"{i} \n" for i in range(30)]
    assert reads[-1] == {"payload": None, "error": "", "done": True}
    assert echo == {"text": "echo: hello"}
    [session] = status["sessions"]
    assert session["plugin_id"] == "example-executor"
    assert session["peer_uid"] == os.getuid()
    assert session["streams"] == {"http": 0, "model": 0, "emit": 0}


async def test_plugin_stderr_becomes_log_lines_tagged_with_the_plugin(short_tmp: Path) -> None:
    async with running(short_tmp, "--name", "tagged", cmd=scripted("--id", "tagged")) as hp:
        async with await hp.connect_control() as ctl:
            pid = (await invoke(ctl, "tagged", "t.pid"))["pid"]
            status = await ctl.call("hostd.status", {}, timeout=T)
        line = orjson.loads(await hp.wait_log(f"plugin tagged ready, pid {pid}"))
    assert line["msg"] == f"plugin tagged ready, pid {pid}"
    assert line["plugin"] == "tagged"
    assert line["source"] == "stderr"
    assert line["pid"] == pid
    assert status["sessions"][0]["peer_pid"] == pid


async def test_run_exits_with_the_plugins_exit_code(short_tmp: Path) -> None:
    hp = await start_run(short_tmp, cmd=scripted("--exit", "3"))
    assert await wait_exit(hp) == 3
    await hp.stop()
    assert any('"plugin exited"' in line and '"code":3' in line for line in hp.stderr_lines)


async def test_run_exits_128_plus_n_when_signal_n_ended_the_plugin(short_tmp: Path) -> None:
    hp = await start_run(short_tmp, cmd=scripted("--kill-self", str(int(signal.SIGUSR1))))
    assert await wait_exit(hp) == 128 + signal.SIGUSR1


async def test_sigterm_stops_hostd_and_terminates_the_plugin(short_tmp: Path) -> None:
    hp = await start_run(short_tmp, cmd=scripted())
    async with await hp.connect_control() as ctl:
        pid = (await invoke(ctl, "scripted", "t.pid"))["pid"]
    hp.proc.send_signal(signal.SIGTERM)
    code = await wait_exit(hp)
    # hostd reaped its child before exiting: the pid is gone, not a zombie.
    assert not is_running(pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # The plugin saw stdin EOF first and exited by itself, or died of the SIGTERM.
    assert code in (0, 128 + signal.SIGTERM)


async def test_a_plugin_ignoring_sigterm_is_killed_after_the_grace(short_tmp: Path) -> None:
    hp = await start_run(short_tmp, "--shutdown-grace", "0.3", cmd=scripted("--ignore-sigterm"))
    async with await hp.connect_control() as ctl:
        pid = (await invoke(ctl, "scripted", "t.pid"))["pid"]
    hp.proc.send_signal(signal.SIGINT)
    code = await wait_exit(hp)
    assert code in (0, 128 + signal.SIGKILL)
    assert not is_running(pid)


async def test_a_plugin_that_ignores_stdin_eof_and_sigterm_is_killed(short_tmp: Path) -> None:
    # `sh -c` keeps no protocol: hostd's session ends at once (stdout closed), the child
    # keeps running, ignores SIGTERM, and must still be gone when hostd exits.
    script = "trap '' TERM; exec 1>&-; while :; do sleep 1; done"
    hp = await start_run(short_tmp, "--shutdown-grace", "0.3", cmd=["sh", "-c", script], ready='"plugin started"')
    started = orjson.loads(await hp.wait_log('"plugin started"'))
    code = await wait_exit(hp)
    assert code == 128 + signal.SIGKILL
    assert not is_running(started["pid"])
    assert any('"plugin did not stop in time; killing it"' in line for line in hp.stderr_lines)


async def test_sigkill_of_hostd_leaves_no_plugin_behind(short_tmp: Path) -> None:
    hp = await start_run(short_tmp, cmd=scripted("--ignore-sigterm"))
    async with await hp.connect_control() as ctl:
        pid = (await invoke(ctl, "scripted", "t.pid"))["pid"]
    assert is_running(pid)
    hp.proc.send_signal(signal.SIGKILL)
    assert await wait_exit(hp) == -signal.SIGKILL
    await wait_gone(pid)  # PR_SET_PDEATHSIG: SIGKILL as soon as hostd is gone
    assert not is_running(pid)


async def test_sigkill_of_hostd_kills_a_plugin_that_ignores_eof_and_sigterm(short_tmp: Path) -> None:
    script = "trap '' TERM; while :; do sleep 1; done"
    hp = await start_run(short_tmp, cmd=["sh", "-c", script], ready='"plugin started"')
    pid = orjson.loads(await hp.wait_log('"plugin started"'))["pid"]
    assert is_running(pid)
    hp.proc.send_signal(signal.SIGKILL)
    assert await wait_exit(hp) == -signal.SIGKILL
    await wait_gone(pid)
    assert not is_running(pid)


async def test_run_without_a_command_is_a_usage_error(short_tmp: Path) -> None:
    proc = await asyncio.create_subprocess_exec(*HOSTD, "run", "--", stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"missing plugin command" in err


async def test_run_with_a_command_that_does_not_exist_exits_127(short_tmp: Path) -> None:
    control = f"unix:{short_tmp / 'c.sock'}"
    proc = await asyncio.create_subprocess_exec(
        *HOSTD, "run", "--control", control, "--", str(short_tmp / "no-such-plugin"), stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(T):
        _, err = await proc.communicate()
    assert proc.returncode == 127
    assert b'"cannot start plugin"' in err
    assert not (short_tmp / "c.sock").exists()


async def test_run_refuses_listen(short_tmp: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *HOSTD, "run", "--listen", f"unix:{short_tmp / 's'}", "--", "true", stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"--listen is not supported" in err
