"""PROTOCOL.md §5b: host.log levels, trimming, fields and redaction, as written on stderr."""

from __future__ import annotations

import os
import select
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from hostd.client import RpcError
from hostd.logs import (
    DEBUG,
    ERROR,
    INFO,
    REDACTED,
    SECRET_CACHE_MAX_KEY_CHARS,
    SECRET_CACHE_MAX_KEYS,
    TRACE,
    WARN,
    Logger,
    TokenBucket,
    is_secret_key,
    redact,
    secret_cache_size,
)
from tests.support.hostd_proc import HOSTD, HostdProcess, hostd_without, running_hostd

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


@pytest.mark.parametrize("level", ["error", "trace"], ids=["written", "filtered"])
async def test_fields_that_are_not_an_object_are_invalid_params(hostd: HostdProcess, level: str) -> None:
    async with await hostd.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.log", {"level": level, "message": "m", "fields": [1]}, timeout=5)
        assert e.value.code == -32602
        assert e.value.message == "decode host log request: Expected `object | null`, got `array` - at `$.fields`"
        assert await c.call("host.log", {"level": level, "message": "m", "fields": None}, timeout=5) == {}


# hostd as built (the C log writer and rate limit) and as built without a C compiler.
BUILDS = {"C writer": None, "Python writer": hostd_without("hostd._logline")}


@pytest.mark.parametrize("build", list(BUILDS))
async def test_over_the_rate_limit_lines_are_dropped_counted_and_warned_once(short_tmp: Path, build: str) -> None:
    config = short_tmp / "hostd.toml"
    config.write_text("[log]\nplugin_lines_per_s = 1\nplugin_burst = 2\n")
    async with running_hostd(short_tmp, "--config", str(config), control=True, command=BUILDS[build]) as hp:
        async with await hp.connect() as c:
            await c.call("hostd.hello", {"plugin_id": "chatty"}, timeout=5)
            for i in range(20):
                assert await c.call("host.log", {"level": "info", "message": f"line {i}"}, timeout=5) == {}
            with pytest.raises(RpcError) as e:  # a bad line over the limit is still an error
                await c.call("host.log", {"level": "info", "message": "m", "fields": "x"}, timeout=5)
            assert e.value.code == -32602
        warning = orjson.loads(await hp.wait_log("plugin log lines dropped"))
        async with await hp.connect_control() as ctl:
            status = await ctl.call("hostd.status", timeout=5)
    # 2 in the burst, then 1 a second: the call loop would have to last 8 s for fewer than 10 drops
    assert status["totals"]["dropped_log_lines"] >= 10
    assert warning["plugin"] == "chatty" and warning["dropped"] >= 1
    written = [line for line in hp.stderr_lines if '"msg":"line ' in line]
    assert 2 <= len(written) <= 20 - status["totals"]["dropped_log_lines"]


def test_secret_key_matching_ignores_case_dashes_and_underscores() -> None:
    assert is_secret_key("X-API-KEY")
    assert is_secret_key("apiKey")
    assert is_secret_key("x_goog_api_key")
    assert not is_secret_key("model")
    assert redact([{"password": 1}]) == [{"password": REDACTED}]


# The logger itself, writing to a real pipe ------------------------------------------------


def written(**kw: Any) -> tuple[Logger, Callable[[], list[bytes]]]:
    """A Logger writing to a pipe, and a function that flushes it and returns its lines."""
    read_fd, write_fd = os.pipe()

    def lines() -> list[bytes]:
        logger.flush()
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            return f.read().splitlines()

    logger = Logger(kw.pop("level", "trace"), fd=write_fd, **kw)
    return logger, lines


def test_json_is_the_format_off_a_terminal() -> None:
    logger, lines = written(fmt="auto")
    logger.info("hello", n=1)
    [line] = lines()
    assert orjson.loads(line)["msg"] == "hello"


def test_text_format_shows_level_message_and_fields() -> None:
    logger, lines = written(fmt="text")
    logger.warn("upstream slow", url="https://example.test/a b", n=3, ok=True, password="hunter2")
    [line] = lines()
    ts, level, rest = line.decode().split(" ", 2)
    assert ts.endswith("Z") and level == "WARN"
    assert rest.strip() == 'upstream slow url="https://example.test/a b" n=3 ok=true password=[redacted]'


def test_text_lines_stay_on_one_line() -> None:
    logger, lines = written(fmt="text")
    logger.error("two\nlines", detail="a\nb")
    assert len(lines()) == 1


def test_journald_priority_prefix_when_journal_stream_is_stderr() -> None:
    read_fd, write_fd = os.pipe()
    st = os.fstat(write_fd)
    logger = Logger("trace", fd=write_fd, environ={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    for level in (TRACE, DEBUG, INFO, WARN, ERROR):
        logger.log(level, "m")
    logger.flush()
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        prefixes = [line[:3] for line in f.read().splitlines()]
    assert prefixes == [b"<7>", b"<7>", b"<6>", b"<4>", b"<3>"]


def test_no_priority_prefix_when_journal_stream_is_another_file() -> None:
    logger, lines = written(environ={"JOURNAL_STREAM": "1:2"})
    logger.error("m")
    [line] = lines()
    assert line.startswith(b"{")


def test_a_long_line_is_cut_and_marked_truncated() -> None:
    logger, lines = written(max_line_bytes=1024)
    logger.info("big", blob="x" * 100_000, after="kept?")
    logger.info("small")
    big, small = lines()
    assert len(big) + 1 <= 1024
    record = orjson.loads(big)
    assert record["truncated"] is True and record["msg"] == "big" and record["blob"].startswith("xxx")
    assert "truncated" not in orjson.loads(small)


def test_a_line_of_escapes_and_huge_keys_is_still_cut_to_the_bound() -> None:
    logger, lines = written(max_line_bytes=2048)
    logger.info("esc", **{"k" * 100_000: "\x01" * 50_000, "e": "\x02" * 50_000})
    [line] = lines()
    assert len(line) + 1 <= 2048 and orjson.loads(line)["truncated"] is True


def test_a_long_text_line_is_cut_and_marked() -> None:
    logger, lines = written(fmt="text", max_line_bytes=512)
    logger.info("big", blob="é" * 10_000)
    [line] = lines()
    assert len(line) + 1 <= 512 and line.endswith(b" truncated=true")
    line.decode()  # still valid UTF-8


@pytest.mark.parametrize("c_writer", [True, False], ids=["C writer", "Python writer"])
def test_a_line_queued_after_the_writer_went_idle_is_written_without_a_flush(c_writer: bool) -> None:
    read_fd, write_fd = os.pipe()
    logger = Logger("info", fd=write_fd, c_writer=c_writer)
    try:
        for n in range(3):  # each line finds the writer waiting: it must wake it
            logger.info("again", n=n)
            ready, _, _ = select.select([read_fd], [], [], 10)
            assert ready, "the writer did not wake for a line"
            assert orjson.loads(os.read(read_fd, 65536))["n"] == n
    finally:
        logger.flush()
        os.close(write_fd)
        os.close(read_fd)


@pytest.mark.parametrize("c_writer", [True, False], ids=["C writer", "Python writer"])
def test_over_the_queue_byte_bound_lines_are_dropped_and_counted(c_writer: bool) -> None:
    read_fd, write_fd = os.pipe()  # nobody reads: the writer blocks once the pipe is full
    logger = Logger("info", fd=write_fd, max_queue_bytes=256 * 1024, c_writer=c_writer)
    for _ in range(20_000):
        logger.info("filler", blob="y" * 1000)
    assert logger.dropped > 0
    assert logger.queued_bytes <= 256 * 1024
    os.close(read_fd)  # the writer's next write fails and it gives up on the rest
    logger.flush()
    os.close(write_fd)


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**63) - 1, 10**100, {"deep": 1}, [[[[1]]]]],
    ids=["u64+1", "i64-1", "googol", "dict", "list"],
)
def test_values_orjson_refuses_are_written_as_text(value: Any) -> None:
    deep: Any = value
    if isinstance(value, (dict, list)):
        for _ in range(300):  # nesting beyond orjson's 255
            deep = [deep]
    logger, lines = written()
    logger.info("odd", value=deep, big=2**70)
    logger.emit_record({"ts": None, "level": "info", "msg": "raw", "n": 2**65, 1: "int key"})
    first, second = lines()
    assert orjson.loads(first)["big"] == str(2**70)
    raw = orjson.loads(second)
    assert raw["n"] == str(2**65) and raw["1"] == "int key"


def test_per_logger_levels_follow_dotted_names() -> None:
    logger, lines = written(level="info", levels={"hostd.upstream": "debug", "hostd.upstream.pool": "error"})
    logger.named("hostd.upstream").debug("shown")
    logger.named("hostd.upstream.http").debug("shown too")
    logger.named("hostd.upstream.pool").warn("hidden")
    logger.named("hostd.rpc").debug("hidden")
    logger.debug("hidden")
    records = [orjson.loads(line) for line in lines()]
    assert [(r["msg"], r["logger"]) for r in records] == [
        ("shown", "hostd.upstream"),
        ("shown too", "hostd.upstream.http"),
    ]


def test_named_loggers_follow_a_reconfiguration() -> None:
    logger, lines = written(level="info")
    named = logger.named("hostd.upstream")
    named.debug("before")
    logger.set_levels({"hostd.upstream": "debug"})
    named.debug("after")
    assert [orjson.loads(line)["msg"] for line in lines()] == ["after"]


def test_plugin_thresholds() -> None:
    logger = Logger("info", fd=os.open(os.devnull, os.O_WRONLY), levels={"plugin:p1": "trace", "plugin": "warn"})
    assert logger.plugin_threshold("p1") == TRACE
    assert logger.plugin_threshold("p2") == WARN
    logger.set_levels({})
    assert logger.plugin_threshold("p1") == INFO
    logger.flush()


def test_secret_key_cache_keeps_no_long_plugin_keys() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(64):
            key = f"{i:04d}" + "k" * (1024 * 1024)
            is_secret_key(key)
            del key
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 4 * 1024 * 1024
    _entries, chars = secret_cache_size()
    assert chars <= SECRET_CACHE_MAX_KEYS * SECRET_CACHE_MAX_KEY_CHARS


def test_secret_key_cache_is_bounded_in_entries() -> None:
    for i in range(SECRET_CACHE_MAX_KEYS * 2 + 10):
        is_secret_key(f"field-{i}")
    assert secret_cache_size()[0] <= SECRET_CACHE_MAX_KEYS
    assert is_secret_key("field-token") and not is_secret_key("field-1")


def test_redaction_of_deep_values_stops_at_a_bound() -> None:
    deep: Any = {"password": "p"}
    for _ in range(2000):
        deep = {"a": deep}
    out = redact(deep)  # no RecursionError
    while isinstance(out, dict):
        assert out.get("password") in (None, REDACTED)
        out = out.get("a")
    assert out in ("[nested too deep]", None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 20, clock=clock)
    assert sum(bucket.take() for _ in range(30)) == 20
    assert bucket.dropped == 10
    clock.now += 0.5  # 5 tokens
    assert sum(bucket.take() for _ in range(10)) == 5
    clock.now += 100  # refills to the burst, not beyond
    assert sum(bucket.take() for _ in range(50)) == 20


def test_token_bucket_warns_at_most_once_per_second_with_the_count() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1, 1, clock=clock)
    assert bucket.warning_due() == 0
    bucket.take()
    for _ in range(5):
        bucket.take()
    assert bucket.warning_due() == 5
    bucket.take()
    assert bucket.warning_due() == 0  # within the second: no second warning
    clock.now += 0.5
    bucket.take()
    assert bucket.warning_due() == 0
    clock.now += 0.6
    bucket.take()  # a token came back: allowed, not counted
    bucket.take()
    assert bucket.warning_due() == 3


def test_token_bucket_reconfigured_keeps_at_most_the_new_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, 2000, clock=clock)
    bucket.configure(1, 3)
    assert sum(bucket.take() for _ in range(10)) == 3


# Formats on a real hostd ------------------------------------------------------------------


def run_stdio_hostd(*args: str, env: dict[str, str] | None = None, journal: bool = False) -> list[bytes]:
    """``hostd serve`` on stdio: one host.log call at error level, then EOF; its stderr lines."""
    read_fd, write_fd = os.pipe()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSTD_", "JOURNAL_")) or k == "HOSTD_LOOP"}
    if journal:
        st = os.fstat(write_fd)
        full_env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    request = b'{"jsonrpc":"2.0","id":1,"method":"host.log","params":{"level":"error","message":"boom"}}\n'
    try:
        proc = subprocess.run(
            [*HOSTD, "serve", "--auth-dir", "", "--model-base-url", "", *args],
            input=request, stdout=subprocess.PIPE, stderr=write_fd, env={**full_env, **(env or {})},
            timeout=30, check=False,
        )  # fmt: skip
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        lines = f.read().splitlines()
    assert proc.returncode == 0, lines
    return lines


def test_hostd_logs_json_when_stderr_is_not_a_terminal() -> None:
    lines = run_stdio_hostd()
    records = [orjson.loads(line) for line in lines]
    assert any(r["msg"] == "hostd ready" for r in records)
    assert any(r["msg"] == "boom" and r["level"] == "error" for r in records)


def test_hostd_logs_text_with_log_format_text() -> None:
    lines = [line.decode() for line in run_stdio_hostd("--log-format", "text")]
    ready = next(line for line in lines if " hostd ready" in line)
    assert ready.split()[1] == "INFO"
    boom = next(line for line in lines if " boom" in line)
    assert boom.split()[1] == "ERROR" and "plugin=" in boom


def test_log_format_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "hostd.toml"
    config.write_text('[log]\nformat = "text"\n')
    lines = run_stdio_hostd("--config", str(config))
    assert not any(line.startswith(b"{") for line in lines)


def test_journald_priority_prefix_on_a_real_hostd() -> None:
    lines = run_stdio_hostd("--log-level", "debug", journal=True)
    assert lines and all(line[:1] == b"<" and line[2:3] == b">" for line in lines), lines
    boom = next(line for line in lines if b'"msg":"boom"' in line)
    assert boom.startswith(b"<3>{")
    ready = next(line for line in lines if b'"msg":"hostd ready"' in line)
    assert ready.startswith(b"<6>{")


def test_warn_in_capitals_from_the_environment() -> None:
    lines = run_stdio_hostd(env={"HOSTD_LOG_LEVEL": "WARN"})
    records = [orjson.loads(line) for line in lines]
    assert [r["msg"] for r in records if r["level"] == "info"] == []
    assert any(r["msg"] == "boom" for r in records)


def test_a_start_up_error_is_printed_once(short_tmp: Path) -> None:
    path = short_tmp / "precious"
    path.write_text("keep me")
    result = subprocess.run(
        [*HOSTD, "serve", "--listen", f"unix:{path}", "--auth-dir", "", "--model-base-url", ""],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("is not a socket") == 1, result.stderr
