"""SIGHUP reload on a real hostd: the configuration is rebuilt from the start's sources (the
``--config`` file, the environment, the flags) and applied live, sessions and streams kept;
a broken file is refused with its key and the running configuration stays."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hostd.client import ConnectionClosed
from tests.support.hostd_proc import HOSTD, HostdProcess, launch
from tests.support.plugins import plugin_process

pytestmark = pytest.mark.anyio

T = 10.0


def config_text(level: str, max_in_flight: int, extra: str = "") -> str:
    return (
        f'log_level = "{level}"\n{extra}'
        f"[limits]\nmax_in_flight = {max_in_flight}\nmax_streams = 100\n"
        '[auth]\ndir = ""\n[model]\nbase_url = ""\n'
    )


@contextlib.asynccontextmanager
async def reloadable_hostd(tmp: Path, text: str, env: dict[str, str] | None = None) -> AsyncIterator[HostdProcess]:
    """hostd serve --config FILE (no --log-level: the file's level is the one in force), with a
    plugin and a control socket and one flag (--max-streams 7) that must survive reloads."""
    config = tmp / "hostd.toml"
    config.write_text(text)
    sock, control = str(tmp / "hostd.sock"), str(tmp / "control.sock")
    argv = [*HOSTD, "serve", "--config", str(config), "--listen", f"unix:{sock}", "--control", f"unix:{control}"]
    argv += ["--max-streams", "7"]
    hp = await launch(argv, socket=sock, control=control, env=env)
    try:
        yield hp
    finally:
        await hp.stop()


async def reload(hp: HostdProcess, expect: str) -> dict[str, Any]:
    """SIGHUP, then the reload's log line (``expect`` in it) as a record."""
    seen = len(hp.stderr_lines)
    hp.proc.send_signal(signal.SIGHUP)
    async with asyncio.timeout(T):
        while True:
            for line in hp.stderr_lines[seen:]:
                if expect in line:
                    return orjson.loads(line)  # type: ignore[no-any-return]
            seen = len(hp.stderr_lines)
            hp._new_line.clear()  # no await between the scan and the wait: no line is missed
            await hp._new_line.wait()


async def limits_of_a_new_session(hp: HostdProcess) -> dict[str, Any]:
    async with await hp.connect() as c:
        hello = await c.call("hostd.hello", {"plugin_id": "probe"}, timeout=T)
    limits: dict[str, Any] = hello["limits"]
    return limits


async def logged(hp: HostdProcess, client: Any, level: str, marker: str) -> bool:
    """Whether a host.log line at ``level`` is written; a sentinel at error level proves absence."""
    await client.call("host.log", {"level": level, "message": marker}, timeout=T)
    sentinel = f"sentinel-{marker}"
    await client.call("host.log", {"level": "error", "message": sentinel}, timeout=T)
    await hp.wait_log(sentinel)
    return any(f'"msg":"{marker}"' in line for line in hp.stderr_lines)


async def test_reload_applies_the_level_and_a_limit_from_the_config_file(short_tmp: Path) -> None:
    async with reloadable_hostd(short_tmp, config_text("info", 4)) as hp, await hp.connect() as kept:
        await kept.call("hostd.hello", {"plugin_id": "kept"}, timeout=T)
        assert (await limits_of_a_new_session(hp))["max_in_flight"] == 4
        assert not await logged(hp, kept, "debug", "before-reload")

        (short_tmp / "hostd.toml").write_text(config_text("debug", 8))
        await reload(hp, "config reloaded")

        assert await logged(hp, kept, "debug", "after-reload")  # the session opened before still serves
        limits = await limits_of_a_new_session(hp)
        assert limits["max_in_flight"] == 8
        assert limits["max_streams"] == 7  # the flag still wins over the file


async def test_reload_with_a_broken_file_keeps_the_old_values(short_tmp: Path) -> None:
    async with reloadable_hostd(short_tmp, config_text("info", 4)) as hp, await hp.connect() as kept:
        (short_tmp / "hostd.toml").write_text(config_text("debug", 0, extra='log_levl = "x"\n'))
        record = await reload(hp, "config reload failed")
        assert record["level"] == "error"
        assert "$.limits.max_in_flight" in record["error"] and "$.log_levl" in record["error"]
        assert (await limits_of_a_new_session(hp))["max_in_flight"] == 4
        assert not await logged(hp, kept, "debug", "still-info")


async def test_reload_names_the_settings_that_need_a_restart(short_tmp: Path) -> None:
    async with reloadable_hostd(short_tmp, config_text("info", 4)) as hp:
        (short_tmp / "hostd.toml").write_text(config_text("info", 4, extra='socket_mode = "0660"\n'))
        record = await reload(hp, "config reloaded")
        assert "socket_mode" in record["needs_restart"]
        assert (short_tmp / "hostd.sock").stat().st_mode & 0o777 == 0o600  # unchanged until a restart


async def test_an_empty_environment_variable_does_not_shadow_the_file_on_reload(short_tmp: Path) -> None:
    env = {"HOSTD_LOG_LEVEL": ""}
    async with reloadable_hostd(short_tmp, config_text("info", 4), env=env) as hp, await hp.connect() as c:
        (short_tmp / "hostd.toml").write_text(config_text("debug", 4))
        await reload(hp, "config reloaded")
        assert await logged(hp, c, "debug", "file-level")


async def test_a_stream_open_across_a_reload_is_read_to_its_end(short_tmp: Path) -> None:
    async with reloadable_hostd(short_tmp, config_text("info", 4)) as hp:
        async with plugin_process(hp), await hp.connect_control() as ctl:
            answer = await ctl.call(
                "hostd.invoke",
                {"plugin_id": "scripted", "method": "t.stream", "params": {"count": 3}, "stream": True},
                timeout=T,
            )
            first = await ctl.call("hostd.stream.read", {"stream_id": answer["stream_id"]}, timeout=T)
            (short_tmp / "hostd.toml").write_text(config_text("debug", 8))
            await reload(hp, "config reloaded")
            chunks = [first]
            while not chunks[-1]["done"]:
                chunks.append(await ctl.call("hostd.stream.read", {"stream_id": answer["stream_id"]}, timeout=T))
        assert not any(c.get("error") for c in chunks), chunks
        assert sum(1 for c in chunks if c.get("payload")) == 3


async def test_reload_tells_systemd_reloading_then_ready(short_tmp: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(short_tmp / "notify"))
    notify.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async with reloadable_hostd(
            short_tmp, config_text("info", 4), env={"NOTIFY_SOCKET": str(short_tmp / "notify")}
        ) as hp:
            async with asyncio.timeout(T):
                while "READY=1" not in (await loop.sock_recv(notify, 4096)).decode():
                    pass
            (short_tmp / "hostd.toml").write_text(config_text("debug", 8))
            hp.proc.send_signal(signal.SIGHUP)
            messages: list[str] = []
            async with asyncio.timeout(T):
                while not any("READY=1" in m for m in messages):
                    messages.append((await loop.sock_recv(notify, 4096)).decode())
            assert "RELOADING=1" in messages[0]
    finally:
        notify.close()


async def test_allowed_uids_apply_to_new_connections_after_a_reload(short_tmp: Path) -> None:
    async with reloadable_hostd(short_tmp, config_text("info", 4)) as hp, await hp.connect() as kept:
        await kept.call("hostd.hello", {"plugin_id": "kept"}, timeout=T)
        other_uid = os.getuid() + 4242
        (short_tmp / "hostd.toml").write_text(f"allowed_uids = [{other_uid}]\n" + config_text("info", 4))
        await reload(hp, "config reloaded")
        async with await hp.connect() as refused:
            with pytest.raises(ConnectionClosed):
                await refused.call("host.log", timeout=T)
        await hp.wait_log("peer uid not allowed")
        assert await kept.call("host.log", {"message": "still here"}, timeout=T) == {}  # open sessions stay
