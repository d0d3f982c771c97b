"""PROTOCOL.md §5b: host.log levels, trimming, fields and redaction, as written on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from hostd.logs import REDACTED, is_secret_key, redact
from tests.support.hostd_proc import HostdProcess, running_hostd

pytestmark = pytest.mark.anyio


async def logged(hp: HostdProcess, params: dict[str, Any], marker: str) -> dict[str, Any]:
    """Send host.log with a unique field, then return the line it produced."""
    async with await hp.connect() as c:
        await c.call("hostd.hello", {"plugin_id": "logger-test"}, timeout=5)
        fields = {**params.get("fields", {}), "marker": marker}
        assert await c.call("host.log", {**params, "fields": fields}, timeout=5) == {}
    line = await hp.wait_log(f'"marker":"{marker}"')
    return orjson.loads(line)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("trace", "trace"),
        ("DEBUG", "debug"),
        (" Info ", "info"),
        ("warn", "warn"),
        ("Warning", "warn"),
        ("error", "error"),
        ("fatal", "debug"),
        ("", "debug"),
    ],
)
async def test_levels(short_tmp: Path, given: str, expected: str) -> None:
    async with running_hostd(short_tmp, "--log-level", "trace") as hp:
        record = await logged(hp, {"level": given, "message": "m"}, "lv")
    assert record["level"] == expected


async def test_record_shape_and_trimming(hostd: HostdProcess) -> None:
    record = await logged(hostd, {"level": "info", "message": "  spaced  ", "fields": {" k ": 1, "  ": 2}}, "shape")
    assert record["msg"] == "spaced"
    assert record["plugin"] == "logger-test"
    assert record["session"].startswith("session-")
    assert record["ts"].endswith("Z")
    assert record["k"] == 1
    assert "" not in record and "  " not in record
    assert list(record)[:5] == ["ts", "level", "msg", "plugin", "session"]


async def test_blank_message_becomes_plugin_log(hostd: HostdProcess) -> None:
    record = await logged(hostd, {"level": "warn", "message": "   "}, "blank")
    assert record["msg"] == "plugin log"


async def test_secret_fields_are_redacted(hostd: HostdProcess) -> None:
    fields = {
        "Authorization": "Bearer sk-live",
        "proxy-authorization": "Basic x",
        "Cookie": "a=b",
        "Set-Cookie": "c=d",
        "X-Api-Key": "k1",
        "api_key": "k2",
        "refresh_token": "t",
        "client_secret": "s",
        "password": "p",
        "nested": {"token": "deep", "ok": "visible"},
        "user": "alice",
    }
    record = await logged(hostd, {"level": "error", "message": "creds", "fields": fields}, "redact")
    for key in fields:
        if key not in ("nested", "user"):
            assert record[key] == REDACTED, key
    assert record["nested"] == {"token": REDACTED, "ok": "visible"}
    assert record["user"] == "alice"
    assert "sk-live" not in orjson.dumps(record).decode()


async def test_lines_below_the_level_are_not_written(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        await c.call("host.log", {"level": "trace", "message": "too quiet"}, timeout=5)
        await c.call("host.log", {"level": "error", "message": "loud"}, timeout=5)
    await hostd.wait_log('"msg":"loud"')
    assert not any("too quiet" in line for line in hostd.stderr_lines)


def test_secret_key_matching_ignores_case_dashes_and_underscores() -> None:
    assert is_secret_key("X-API-KEY")
    assert is_secret_key("apiKey")
    assert is_secret_key("x_goog_api_key")
    assert not is_secret_key("model")
    assert redact([{"password": 1}]) == [{"password": REDACTED}]
