"""The shipped systemd units (docs/systemd/): systemd-analyze verify and security, the names
they give their sockets, and the plugin template's command line run for real."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hostd.client import Client
from tests.support.hostd_proc import HostdProcess
from tests.support.plugins import SCRIPTED

pytestmark = pytest.mark.anyio

UNITS = Path(__file__).resolve().parents[1] / "docs" / "systemd"
SHIPPED_HOSTD = "/opt/hostd/bin/hostd"
INSTALLED_HOSTD = str(Path(sys.executable).with_name("hostd"))
MAX_EXPOSURE = 2.5
T = 20.0


def unit(name: str) -> dict[str, list[str]]:
    """``Section.Key`` -> its values, in order (a unit file may repeat a key)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def fd_name(socket_unit: str) -> str:
    [name] = unit(socket_unit)["Socket.FileDescriptorName"]
    return name


def installed_copies(tmp: Path) -> Path:
    """The units with ExecStart/ExecReload pointed at the hostd installed in this venv, and the
    templates instantiated as @demo, in ``tmp``."""
    out = tmp / "units"
    out.mkdir()
    for path in UNITS.iterdir():
        if not path.name.endswith((".service", ".socket")):
            continue
        text = path.read_text().replace(SHIPPED_HOSTD, INSTALLED_HOSTD)
        (out / path.name.replace("@.", "@demo.")).write_text(text)
    return out


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: .ci/run installs Debian's systemd package"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_shipped_units_are_the_expected_set() -> None:
    names = {p.name for p in UNITS.iterdir() if p.name.endswith((".service", ".socket"))}
    assert names == {
        "hostd.service",
        "hostd-plugins.socket",
        "hostd-control.socket",
        "hostd-plugin@.service",
        "hostd-plugin@.socket",
    }


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    assert Path(INSTALLED_HOSTD).exists()
    units = installed_copies(tmp_path)
    files = sorted(p.name for p in units.iterdir())
    result = analyze("verify", "--man=no", *files, cwd=units)
    assert result.returncode == 0, result.stderr
    ours = [line for line in result.stderr.splitlines() if any(f in line for f in files)]
    assert ours == [], result.stderr


def test_verify_would_catch_a_missing_executable(tmp_path: Path) -> None:
    units = installed_copies(tmp_path)
    service = units / "hostd.service"
    service.write_text(service.read_text().replace(INSTALLED_HOSTD, str(tmp_path / "missing" / "hostd")))
    result = analyze("verify", "--man=no", "hostd.service", "hostd-plugins.socket", "hostd-control.socket", cwd=units)
    assert result.returncode != 0
    assert "is not executable" in result.stderr


@pytest.mark.parametrize("service", ["hostd.service", "hostd-plugin@demo.service"])
def test_security_exposure_is_at_most_2_5(tmp_path: Path, service: str) -> None:
    units = installed_copies(tmp_path)
    result = analyze("security", "--offline=yes", "--no-pager", service, cwd=units)
    assert result.returncode == 0, result.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert m, result.stdout
    assert float(m.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("service", ["hostd.service", "hostd-plugin@.service"])
def test_the_sandbox_keeps_what_hostd_needs(service: str) -> None:
    u = unit(service)
    assert u["Service.RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert u["Service.NoNewPrivileges"] == ["yes"]
    assert u["Service.Type"] == ["notify"]


def test_the_auth_directory_stays_writable() -> None:
    assert unit("hostd.service")["Service.ReadWritePaths"] == ["/var/lib/cliproxy/auth"]
    assert 'dir = "/var/lib/cliproxy/auth"' in (UNITS / "hostd.toml").read_text()


def test_each_socket_unit_has_one_socket_and_one_name() -> None:
    for socket_unit in ("hostd-plugins.socket", "hostd-control.socket", "hostd-plugin@.socket"):
        u = unit(socket_unit)
        assert len(u["Socket.ListenStream"]) == 1, socket_unit
        assert len(u["Socket.FileDescriptorName"]) == 1, socket_unit
    assert fd_name("hostd-plugins.socket") == "plugins"
    assert fd_name("hostd-control.socket") == "control"
    assert fd_name("hostd-plugin@.socket") == "control"


def test_the_service_joins_both_sockets() -> None:
    u = unit("hostd.service")
    assert u["Service.Sockets"] == ["hostd-plugins.socket hostd-control.socket"]
    assert unit("hostd-plugin@.service")["Service.Sockets"] == ["hostd-plugin@%i.socket"]


def test_other_users_can_reach_the_plugin_socket() -> None:
    u = unit("hostd-plugins.socket")
    assert u["Socket.SocketMode"] == ["0660"]
    assert u["Socket.SocketGroup"] == ["hostd-plugins"]
    # the directory systemd creates is root's: it must let others through to the socket
    assert int(u["Socket.DirectoryMode"][0], 8) & 0o005 == 0o005
    tmpfiles = (UNITS / "hostd.tmpfiles").read_text()
    assert re.search(r"^d\s+/run/hostd\s+0750\s+cliproxy\s+hostd-plugins", tmpfiles, re.M)


@pytest.mark.parametrize("service", ["hostd.service", "hostd-plugin@.service"])
def test_no_environment_shadows_the_config_file(service: str) -> None:
    u = unit(service)
    assert "Service.Environment" not in u
    assert not any("--log-level" in line for line in u["Service.ExecStart"])


@pytest.mark.parametrize(("service", "config"), [("hostd.service", "/etc/hostd/hostd.toml")])
def test_reload_checks_the_config_before_sighup(service: str, config: str) -> None:
    reload = unit(service)["Service.ExecReload"]
    assert reload == [f"{SHIPPED_HOSTD} config check --config {config}", "/bin/kill -HUP $MAINPID"]
    assert f"--config {config}" in unit(service)["Service.ExecStart"][0]


# The template's command line, run for real --------------------------------------------------


def template_argv(instance: str, env: dict[str, str], config: str) -> list[str]:
    """hostd-plugin@.service's ExecStart as systemd would run it for ``instance``."""
    [exec_start] = unit("hostd-plugin@.service")["Service.ExecStart"]
    line = exec_start.replace("%i", instance)
    line = line.replace(f"/etc/hostd/plugins/{instance}.toml", config)
    argv: list[str] = []
    for word in shlex.split(line):
        if word.startswith("$") and word[1:].isidentifier():
            argv += env.get(word[1:], "").split()  # systemd splits an unbraced $VAR at whitespace
        else:
            argv.append(word)
    assert argv[0] == SHIPPED_HOSTD
    return [INSTALLED_HOSTD, *argv[1:]]


async def test_the_template_runs_one_plugin_under_its_own_name(short_tmp: Path) -> None:
    activate = shutil.which("systemd-socket-activate")
    assert activate, "systemd-socket-activate is missing: .ci/run installs Debian's systemd package"
    config = short_tmp / "scripted.toml"
    config.write_text('[auth]\ndir = ""\n[model]\nbase_url = ""\n')
    env_file = {"HOSTD_PLUGIN_COMMAND": f"{sys.executable} {SCRIPTED}"}
    argv = template_argv("scripted", env_file, str(config))
    assert argv[1:4] == ["run", "--config", str(config)] and "--name" in argv
    control = short_tmp / "plugin-scripted.sock"
    proc = await asyncio.create_subprocess_exec(
        activate, "-l", str(control), f"--fdname={fd_name('hostd-plugin@.socket')}", *argv,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOSTD_LOG_LEVEL": "debug"},
    )  # fmt: skip
    hp = HostdProcess(proc, None, str(control))
    hp._stderr_task = asyncio.create_task(hp._read_stderr())
    try:
        async with asyncio.timeout(T):
            while not control.exists():
                await hp.wait_log("Listening on")
        async with await Client.connect(f"unix:{control}") as ctl:  # starts hostd, as systemd would
            await hp.wait_log('"hello plugin"', timeout=T)
            answer = await ctl.call(
                "hostd.invoke", {"plugin_id": "scripted", "method": "t.echo", "params": {"x": 1}}, timeout=T
            )
            status = await ctl.call("hostd.status", {}, timeout=T)
        assert answer["result"]["params"]["x"] == 1
        assert [s["plugin_id"] for s in status["sessions"]] == ["scripted"]
    finally:
        code = await hp.stop()
        # hostd run exits with its plugin's status: 128+15 when the stop's SIGTERM ended it
        success = {0, *map(int, unit("hostd-plugin@.service")["Service.SuccessExitStatus"][0].split())}
        assert code in success, "\n".join(hp.stderr_lines)
