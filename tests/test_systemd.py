"""systemd integration: socket activation, sd_notify messages, allowed peer uids."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from hostd.client import Client, ConnectionClosed
from tests.support.hostd_proc import HOSTD, running_hostd

pytestmark = pytest.mark.anyio


async def test_socket_activation_serves_on_inherited_sockets(short_tmp: Path) -> None:
    plugin = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    plugin.bind(str(short_tmp / "activated.sock"))
    plugin.listen()
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(str(short_tmp / "activated-control.sock"))
    control.listen()
    fds = {"plugin": plugin.fileno(), "control": control.fileno()}
    assert min(fds.values()) > 4  # so moving them to 3 and 4 cannot clobber one with the other
    # Moves the sockets to fds 3 and 4, sets LISTEN_PID to its own pid and execs hostd
    # (the pid stays the same), as systemd does.
    wrapper = (
        "import os,sys\n"
        f"os.dup2({fds['plugin']}, 3); os.dup2({fds['control']}, 4)\n"
        "os.environ['LISTEN_PID']=str(os.getpid())\n"
        "os.execv(sys.executable, sys.argv[1:])\n"
    )
    env = {**os.environ, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "plugins:control"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", wrapper, *HOSTD, "serve", "--auth-dir", "", "--model-base-url", "",
        pass_fds=(fds["plugin"], fds["control"]), env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with await Client.connect(f"unix:{short_tmp / 'activated.sock'}") as c:
            assert await c.call("host.log", timeout=10) == {}
        async with await Client.connect(f"unix:{short_tmp / 'activated-control.sock'}") as c:
            with pytest.raises(Exception) as e:  # a control socket: host.* is not served there
                await c.call("host.log", timeout=10)
            assert "unsupported host callback host.log" in str(e.value)
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        plugin.close()
        control.close()
    # hostd does not remove socket files it did not create
    assert (short_tmp / "activated.sock").exists()


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
