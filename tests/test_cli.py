"""``hostd status`` and ``hostd call`` against a real hostd, with a real plugin holding streams open."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from hostd.client import Client
from hostd.status_cli import prometheus, render
from tests.support.hostd_proc import HOSTD, HostdProcess
from tests.support.plugins import plugin_process

pytestmark = pytest.mark.anyio

T = 10.0


async def hostd_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("HOSTD_CONTROL", "HOSTD_SOCKET")}
    proc = await asyncio.create_subprocess_exec(
        *HOSTD,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**full_env, **(env or {})},
    )
    async with asyncio.timeout(T):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def status_json(hp: HostdProcess) -> dict[str, Any]:
    code, out, err = await hostd_cli("status", "--control", f"unix:{hp.control}", "--json")
    assert code == 0, err
    result: dict[str, Any] = orjson.loads(out)
    return result


async def open_stream(ctl: Client, count: int) -> str:
    answer = await ctl.call(
        "hostd.invoke",
        {"plugin_id": "scripted", "method": "t.stream", "params": {"count": count}, "stream": True},
        timeout=T,
    )
    stream_id: str = answer["stream_id"]
    return stream_id


async def drain(ctl: Client, stream_id: str) -> None:
    while not (await ctl.call("hostd.stream.read", {"stream_id": stream_id}, timeout=T))["done"]:
        pass


async def test_status_counts_open_emit_streams_and_zero_after_they_end(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl:
        streams = [await open_stream(ctl, 3), await open_stream(ctl, 3)]
        during = await status_json(hp)
        for stream_id in streams:
            await drain(ctl, stream_id)
        after = await status_json(hp)
    [plugin_during] = [s for s in during["sessions"] if s["plugin_id"] == "scripted"]
    [plugin_after] = [s for s in after["sessions"] if s["plugin_id"] == "scripted"]
    assert plugin_during["streams"] == {"http": 0, "model": 0, "emit": 2}
    assert plugin_after["streams"] == {"http": 0, "model": 0, "emit": 0}
    assert after["totals"]["streams_opened"] == after["totals"]["streams_closed"] == 2


async def test_status_table_shows_sessions_and_counts(hp: HostdProcess) -> None:
    async with plugin_process(hp) as plugin, await hp.connect_control() as ctl:
        stream_id = await open_stream(ctl, 2)
        code, out, err = await hostd_cli("status", env={"HOSTD_CONTROL": f"unix:{hp.control}"})
        await drain(ctl, stream_id)
        code_after, out_after, _ = await hostd_cli("status", "--control", f"unix:{hp.control}")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("hostd ") and "1 plugin session," in lines[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("SESSION"))
    assert lines[header].split() == ["SESSION", "PLUGIN", "PID", "UID", "OPENED", "IN-FLIGHT", "HTTP", "MODEL", "EMIT"]
    row = lines[header + 1].split()
    assert row[1:4] == ["scripted", str(plugin.pid), str(os.getuid())]
    assert row[-3:] == ["0", "0", "1"]
    assert lines[-1].startswith("totals: calls ")
    assert code_after == 0
    assert out_after.splitlines()[header + 1].split()[-3:] == ["0", "0", "0"]


def test_status_table_without_sessions() -> None:
    text = render({"version": "9", "uptime_s": 3725.2, "sessions": [], "control_sessions": 1, "totals": {"calls": 4}})
    assert text.splitlines() == [
        "hostd 9, up 1h02m05s, 0 plugin sessions, 1 control",
        "no plugin sessions",
        "totals: calls 4",
    ]


async def test_status_without_a_control_address_is_a_usage_error() -> None:
    code, _, err = await hostd_cli("status")
    assert code == 2
    assert "no control socket" in err


async def test_status_that_cannot_connect_exits_2(short_tmp: Path) -> None:
    code, _, err = await hostd_cli("status", "--control", f"unix:{short_tmp / 'missing.sock'}")
    assert code == 2
    assert "cannot connect" in err


async def test_call_on_the_control_socket_prints_the_result(hp: HostdProcess) -> None:
    code, out, err = await hostd_cli("call", "--control", f"unix:{hp.control}", "hostd.status")
    assert code == 0, err
    assert orjson.loads(out)["control_sessions"] == 1


async def test_call_with_an_error_answer_exits_1(hp: HostdProcess) -> None:
    code, _, err = await hostd_cli(
        "call", "--control", f"unix:{hp.control}", "hostd.invoke", '{"plugin_id": "nope", "method": "m"}'
    )
    assert code == 1
    assert orjson.loads(err)["error"]["message"] == "no session for plugin nope"


def test_status_table_shows_listen_addresses_config_and_limits() -> None:
    status = {
        "version": "9",
        "uptime_s": 61,
        "sessions": [],
        "control_sessions": 1,
        "listen": ["unix:/run/hostd/plugins.sock"],
        "control": "unix:/run/hostd/control.sock",
        "config_file": "/etc/hostd/hostd.toml",
        "limits": {"max_in_flight": 256, "max_streams": 1024},
        "totals": {"calls": 4},
    }
    assert render(status).splitlines() == [
        "hostd 9, up 1m01s, 0 plugin sessions, 1 control",
        "listen: unix:/run/hostd/plugins.sock",
        "control: unix:/run/hostd/control.sock",
        "config: /etc/hostd/hostd.toml",
        "limits: max_in_flight 256, max_streams 1024",
        "no plugin sessions",
        "totals: calls 4",
    ]
    bare = render({**status, "listen": [], "control": None, "config_file": None}).splitlines()
    assert bare[1:4] == ["listen: -", "control: -", "config: (none: defaults, environment and flags)"]


# Prometheus text exposition format ----------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse_exposition(text: str) -> dict[str, tuple[str, list[tuple[str, float]]]]:
    """A strict reader of the text format: every sample's family has HELP and TYPE first."""
    assert text.endswith("\n")
    families: dict[str, tuple[str, list[tuple[str, float]]]] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge"), line
            assert name in helped and name not in families, line
            families[name] = (kind, [])
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name = m.group(1)
            assert name in families, f"sample before its TYPE: {line!r}"
            families[name][1].append((m.group(2) or "", float(m.group(3))))
    return families


async def test_status_in_prometheus_format(hp: HostdProcess) -> None:
    async with plugin_process(hp), await hp.connect_control() as ctl:
        stream_id = await open_stream(ctl, 2)
        code, out, err = await hostd_cli("status", "--control", f"unix:{hp.control}", "--format", "prometheus")
        await drain(ctl, stream_id)
    assert code == 0, err
    families = parse_exposition(out)
    assert families["hostd_plugin_sessions"] == ("gauge", [("", 1.0)])
    kind, samples = families["hostd_plugin_open_streams"]
    assert kind == "gauge"
    assert ('{plugin="scripted",kind="emit"}', 1.0) in samples
    assert families["hostd_calls_total"][0] == "counter"
    assert families["hostd_calls_total"][1][0][1] >= 1
    assert families["hostd_uptime_seconds"][1][0][1] > 0
    kind, samples = families["hostd_buffered_bytes"]
    assert kind == "gauge"
    assert sorted(labels for labels, _ in samples) == [
        '{kind="body"}',
        '{kind="output"}',
        '{kind="partial_line"}',
        '{kind="request"}',
        '{kind="scan"}',
    ]
    assert all(name.startswith("hostd_") for name in families)
    assert all(name.endswith("_total") for name, (k, _) in families.items() if k == "counter")


def test_prometheus_escapes_label_values() -> None:
    text = prometheus(
        {"version": 'a"b\\c', "uptime_s": 1, "sessions": [{"plugin_id": "p\n1", "in_flight": 2, "streams": {}}]}
    )
    families = parse_exposition(text)
    assert families["hostd_info"][1] == [('{version="a\\"b\\\\c"}', 1.0)]
    assert families["hostd_plugin_in_flight"][1] == [('{plugin="p\\n1"}', 2.0)]
