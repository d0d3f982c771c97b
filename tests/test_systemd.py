"""systemd integration: socket activation (under systemd-socket-activate, with the names the
shipped units give), sd_notify messages, allowed peer uids."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hostd.client import Client, ConnectionClosed, RpcError
from hostd.systemd import inherited_sockets
from tests.support.hostd_proc import HOSTD, HostdProcess, running_hostd
from tests.test_units import fd_name, unit

pytestmark = pytest.mark.anyio


def activation_names() -> list[str]:
    """The names the shipped socket units give their sockets, in the service's Sockets= order."""
    [sockets] = unit("hostd.service")["Service.Sockets"]
    return [fd_name(name) for name in sockets.split()]


async def activated_hostd(tmp: Path, names: list[str], *args: str) -> tuple[HostdProcess, list[Path]]:
    """``systemd-socket-activate -l A -l B --fdname=N1:N2 hostd serve``: hostd is exec'd (same
    pid) on the first connection, with LISTEN_FDS/LISTEN_FDNAMES as systemd sets them."""
    activate = shutil.which("systemd-socket-activate")
    assert activate, "systemd-socket-activate is missing: .ci/run installs Debian's systemd package"
    paths = [tmp / f"{name or 'unnamed'}-{i}.sock" for i, name in enumerate(names)]
    argv = [activate, *(f"--listen={p}" for p in paths), "--fdname=" + ":".join(names)]
    argv += [*HOSTD, "serve", "--auth-dir", "", "--model-base-url", "", *args]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    hp = HostdProcess(proc, str(paths[0]), None)
    hp._stderr_task = asyncio.create_task(hp._read_stderr())
    async with asyncio.timeout(20):
        while not all(p.exists() for p in paths):
            await hp.wait_log("Listening on")
    return hp, paths


async def test_socket_activation_with_the_names_the_shipped_units_give(short_tmp: Path) -> None:
    names = activation_names()
    assert sorted(names) == ["control", "plugins"]
    hp, paths = await activated_hostd(short_tmp, names)
    by_name = dict(zip(names, paths, strict=True))
    try:
        async with await Client.connect(f"unix:{by_name['plugins']}") as c:  # starts hostd
            assert await c.call("host.log", {"message": "via systemd"}, timeout=10) == {}
            hello = await c.call("hostd.hello", {"plugin_id": "activated"}, timeout=10)
        assert hello["server"] == "hostd"
        async with await Client.connect(f"unix:{by_name['control']}") as c:
            status = await c.call("hostd.status", {}, timeout=10)
            assert "sessions" in status
            with pytest.raises(RpcError) as e:  # a control socket: host.* is not served there
                await c.call("host.log", timeout=10)
            assert "unsupported host callback host.log" in str(e.value)
    finally:
        assert await hp.stop() == 0, "\n".join(hp.stderr_lines)
    # hostd does not remove socket files it did not create
    assert all(p.exists() for p in paths)


async def test_socket_activation_names_are_matched_not_positions(short_tmp: Path) -> None:
    names = list(reversed(activation_names()))  # control first
    hp, paths = await activated_hostd(short_tmp, names)
    by_name = dict(zip(names, paths, strict=True))
    try:
        async with await Client.connect(f"unix:{by_name['plugins']}") as c:
            assert await c.call("host.log", timeout=10) == {}
        async with await Client.connect(f"unix:{by_name['control']}") as c:
            assert "sessions" in await c.call("hostd.status", {}, timeout=10)
    finally:
        assert await hp.stop() == 0, "\n".join(hp.stderr_lines)


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        (["control", "control"], "2 sockets named 'control'"),
        (["plugins", "sockets"], "unknown socket name 'sockets'"),
        (["control"], "no plugin socket"),
    ],
)
async def test_socket_activation_that_cannot_work_is_refused_at_start(
    short_tmp: Path, names: list[str], problem: str
) -> None:
    hp, paths = await activated_hostd(short_tmp, names)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.connect(str(paths[0]))  # starts hostd, which must refuse and exit 2
    try:
        async with asyncio.timeout(20):
            code = await hp.proc.wait()
            await hp.wait_log(problem)
    finally:
        probe.close()
        await hp.stop()
    assert code == 2, "\n".join(hp.stderr_lines)
    assert sum(problem in line for line in hp.stderr_lines) == 1  # printed once


# hostd.systemd.inherited_sockets on real inherited descriptors ------------------------------

_PROBE = """
import os, socket, sys
from hostd.systemd import ActivationError, inherited_sockets
n = int(sys.argv[1])
socks = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(n)]
for i, s in enumerate(socks):
    s.bind(f"{sys.argv[2]}/s{i}.sock"); s.listen()
fds = [os.dup(s.fileno()) for s in socks]
moved = [os.dup(fd) for fd in fds]  # above 3..3+n, so dup2 below clobbers nothing of ours
for i, fd in enumerate(moved):
    os.dup2(fd, 3 + i)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(n)
if sys.argv[3] != "-":
    os.environ["LISTEN_FDNAMES"] = sys.argv[3]
try:
    plugin, control = inherited_sockets(require_plugin=sys.argv[4] == "1")
except ActivationError as e:
    print("ERROR", e)
else:
    def files(group): return [s.getsockname().rsplit("/", 1)[1] for s in group]
    print("OK", files(plugin), files(control), "LISTEN_FDS" in os.environ)
"""


def probe(tmp: Path, count: int, names: str | None, require_plugin: bool = True) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(count), str(tmp), "-" if names is None else names,
         "1" if require_plugin else "0"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def test_inherited_sockets_by_name(short_tmp: Path) -> None:
    assert probe(short_tmp, 2, "control:plugins") == "OK ['s1.sock'] ['s0.sock'] False"


def test_inherited_sockets_without_names_are_all_plugin_sockets(short_tmp: Path) -> None:
    assert probe(short_tmp, 2, None) == "OK ['s0.sock', 's1.sock'] [] False"


def test_inherited_control_socket_alone_for_hostd_run(short_tmp: Path) -> None:
    assert probe(short_tmp, 1, "control", require_plugin=False) == "OK [] ['s0.sock'] False"


@pytest.mark.parametrize(
    ("count", "names", "message"),
    [
        (2, "control:control", "2 sockets named 'control'"),
        (2, "plugins:plugins", "2 sockets named 'plugins'"),
        (2, "plugins:hostd.socket", "unknown socket name 'hostd.socket'"),
        (1, "control", "no plugin socket"),
        (2, "plugins", "names 1 sockets but LISTEN_FDS=2"),
    ],
)
def test_inherited_sockets_refuse_what_cannot_work(short_tmp: Path, count: int, names: str, message: str) -> None:
    out = probe(short_tmp, count, names)
    assert out.startswith("ERROR ") and message in out, out


def test_no_activation_for_another_pid() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "control:control"}
    assert inherited_sockets(env) == ([], [])
    assert inherited_sockets({}) == ([], [])


async def test_sd_notify_ready_and_stopping(short_tmp: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(short_tmp / "notify"))
    notify.setblocking(False)
    loop = asyncio.get_running_loop()
    hp_env = {"NOTIFY_SOCKET": str(short_tmp / "notify"), "WATCHDOG_USEC": "200000"}
    async with running_hostd(short_tmp, env=hp_env):
        async with asyncio.timeout(10):
            messages = [(await loop.sock_recv(notify, 4096)).decode() for _ in range(2)]
    async with asyncio.timeout(10):
        while "STOPPING=1" not in messages[-1]:
            messages.append((await loop.sock_recv(notify, 4096)).decode())
    notify.close()
    joined = "\n".join(messages)
    assert "READY=1" in joined
    assert "WATCHDOG=1" in joined
    assert "STATUS=" in joined


async def test_peer_uid_not_allowed_is_disconnected(short_tmp: Path) -> None:
    config = short_tmp / "hostd.toml"
    config.write_text(f"allowed_uids = [{os.getuid() + 4242}]\n")
    async with running_hostd(short_tmp, "--config", str(config)) as hp:
        c = await hp.connect()
        with pytest.raises(ConnectionClosed):
            await c.call("host.log", timeout=10)
        await c.aclose()
        await hp.wait_log("peer uid not allowed")
    config.write_text(f"allowed_uids = [{os.getuid()}]\n")
    async with running_hostd(short_tmp, "--config", str(config)) as hp, await hp.connect() as c:
        assert await c.call("host.log", timeout=10) == {}
