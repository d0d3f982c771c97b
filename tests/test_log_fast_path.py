"""host.log's encoded fast path (issue 16): byte for byte the line the record path writes, and
never a shortcut past redaction.

A written host.log line whose fields have only plain keys (stripped, not blank, not secret,
not a record member) and scalar values is encoded in pieces (handlers/log.py, Logger.emit_encoded)
instead of being merged into a record by ``merge_redacted`` and encoded whole. These tests send
lines that take either path through a real hostd and compare each line it writes with the line
the reference rules give (``merge_redacted`` and one ``orjson.dumps`` of the record), and put a
secret in every position the rules redact (PROTOCOL.md §5b: values under secret-looking keys,
at any depth, however the key is spelt or escaped).
"""

from __future__ import annotations

import os
import random
import string
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from hostd.log_format import dumps
from hostd.logs import Logger
from hostd.redact import (
    PLAIN_KEYS,
    REDACTED,
    SECRET_CACHE_MAX_KEY_CHARS,
    SECRET_CACHE_MAX_KEYS,
    merge_redacted,
    plain_keys,
    plain_keys_size,
)
from tests.support.helpers import plugin
from tests.support.hostd_proc import HostdProcess, hostd_without, running_hostd
from tests.support.raw import RawConn

pytestmark = pytest.mark.anyio
T = 10.0
# Every hostd test here runs twice: on hostd as built, where the C writer (hostd._logline)
# writes the common line in one call, and as built without a C compiler (the Python pieces).
BUILDS = {"C writer": None, "Python writer": hostd_without("hostd._logline")}


@pytest.fixture(params=list(BUILDS))
def command(request: pytest.FixtureRequest) -> list[str] | None:
    return BUILDS[request.param]


@pytest.fixture
async def hostd(short_tmp: Path, command: list[str] | None) -> AsyncIterator[HostdProcess]:
    async with running_hostd(short_tmp, command=command) as hp:
        yield hp


@pytest.fixture
async def hp(short_tmp: Path, command: list[str] | None) -> AsyncIterator[HostdProcess]:
    async with running_hostd(short_tmp, control=True, command=command) as proc:
        yield proc


def reference(line: dict[str, Any], level: str, message: str, fields: dict[str, Any] | None) -> bytes:
    """The line the record path writes for a call, ts and session taken from the line written."""
    record: dict[str, Any] = {
        "ts": line["ts"],
        "level": level,
        "msg": message.strip() or "plugin log",
        "plugin": line["plugin"],
        "session": line["session"],
    }
    if "request_id" in line:
        record["request_id"] = line["request_id"]
    if fields:
        merge_redacted(record, fields)
    return dumps(record)  # what Logger.encode writes: values orjson refuses as text


# Each case: raw JSON of ``fields`` (sent as it is), the message, the secrets it holds.
CASES: list[tuple[bytes, str, list[str]]] = [
    (b'{"n":1,"k":"v"}', "plain", []),
    (b'{"n":-3,"f":1.5,"t":true,"z":null,"e":"","s":"caf\xc3\xa9 \\u00e9 \\n tab\\t"}', "scalars", []),
    (b'{ "spaced" : 1 , "b" : [1, 2] }', "whitespace in the JSON", []),
    (b'{"big":18446744073709551616,"n":1}', "over 64 bits", []),
    (b'{"a":1,"a":2,"b":3}', "duplicate key", []),
    (b'{"plugin":"spoofed","msg":"spoofed","ts":"x","session":"s","request_id":"r","k":1}', "record keys", []),
    (b'{"truncated":1,"ok":2}', "a field named truncated", []),
    (b'{"  ":1,"":2," pad ":3}', "blank and padded keys", []),
    (b'{"api_key":"SECRET-field-value"}', "secret key", ["SECRET-field-value"]),
    (b'{"Authorization":"Bearer SECRET-bearer-1"}', "bearer", ["SECRET-bearer-1"]),
    (
        b'{"X-Api-Key":"SECRET-dashed","Refresh_Token":"SECRET-under","PassWord":"SECRET-case"}',
        "spellings",
        ["SECRET-dashed", "SECRET-under", "SECRET-case"],
    ),
    (b'{"pass-word":"SECRET-split","a_p_i_k_e_y":"SECRET-split-2"}', "split words", ["SECRET-split", "SECRET-split-2"]),
    (b'{"\\u0074oken":"SECRET-escaped-key"}', "escaped key", ["SECRET-escaped-key"]),
    ('{"to\u212aen":"SECRET-kelvin"}'.encode(), "kelvin sign lowers to k", ["SECRET-kelvin"]),
    (b'{" token ":"SECRET-padded-key"}', "padded secret key", ["SECRET-padded-key"]),
    (b'{"nested":{"ok":1,"client_secret":"SECRET-nested"}}', "nested", ["SECRET-nested"]),
    (b'{"list":[{"deep":[{"Cookie":"SECRET-in-list"}]}]}', "in a list", ["SECRET-in-list"]),
    (b'{"callback_token":"https://h.example/cb?token=SECRET-url&x=1"}', "URL under a secret key", ["SECRET-url"]),
    (b'{"headers":{"Authorization":["Bearer SECRET-header"]}}', "header list", ["SECRET-header"]),
    (b'{"url":"https://h.example/?sig=abc","note":"Bearer xyz"}', "URL and bearer text under plain keys", []),
    (b"null", "null fields", []),
    (b"{}", "empty fields", []),
]


async def test_every_line_is_the_reference_line_and_secrets_never_reach_stderr(
    short_tmp: Path, command: list[str] | None
) -> None:
    async with running_hostd(short_tmp, "--log-level", "trace", command=command) as hp:
        assert hp.socket is not None
        async with await RawConn.open(hp.socket) as conn:
            await conn.call("hostd.hello", {"plugin_id": "fast-path"})
            for i, (raw, message, _) in enumerate(CASES):
                level = ("trace", "debug", "info", "warn", "error")[i % 5]
                body = (
                    b'{"jsonrpc":"2.0","id":%d,"method":"host.log","params":{"level":"%s","message":%s,"fields":%s}}\n'
                )
                await conn.send(body % (i, level.encode(), orjson.dumps(f"{message} #{i}"), raw))
                answer = await conn.line()
                assert answer == {"jsonrpc": "2.0", "id": i, "result": {}}, answer
        await hp.wait_log(f' #{len(CASES) - 1}"', timeout=T)  # lines are written in order
    for i, (raw, message, secrets) in enumerate(CASES):
        [line] = [x for x in hp.stderr_lines if f'"msg":"{message} #{i}"' in x]
        written = orjson.loads(line)
        fields = msgspec.json.decode(raw)  # as hostd decodes them (orjson reads big integers as floats)
        assert line.encode() == reference(written, written["level"], f"{message} #{i}", fields), message
        for secret in secrets:
            assert not any(secret in x for x in hp.stderr_lines), (message, secret)
        if secrets:
            assert REDACTED in line, message


async def test_a_secret_in_each_position_is_redacted_on_both_paths(hostd: HostdProcess) -> None:
    # The first call of each pair takes the fast path with its plain fields; the second
    # carries the same plain fields and one secret, so the shortcut must not take it.
    positions: dict[str, dict[str, Any]] = {
        "field name": {"token": "SECRET-p1"},
        "field value": {"password": "SECRET-p2"},
        "nested value": {"outer": {"inner": {"apikey": "SECRET-p3"}}},
        "URL query": {"signed_token_url": "https://h.example/x?token=SECRET-p4"},
        "bearer token": {"authorization": "Bearer SECRET-p5"},
        "cookie": {"set-cookie": "sid=SECRET-p6"},
    }
    client, _ = await plugin(hostd, "positions")
    async with client:
        for name, secret in positions.items():
            plain = {"where": name, "n": 1}
            for message, fields in ((f"plain {name}", plain), (f"secret {name}", {**plain, **secret})):
                assert (
                    await client.call("host.log", {"level": "info", "message": message, "fields": fields}, timeout=T)
                    == {}
                )
        await hostd.wait_log(f'"msg":"secret {list(positions)[-1]}"', timeout=T)  # lines are written in order
    for n in range(1, 7):
        assert not any(f"SECRET-p{n}" in line for line in hostd.stderr_lines), n
    for name, secret in positions.items():
        [line] = [orjson.loads(x) for x in hostd.stderr_lines if f'"secret {name}"' in x]
        key = next(iter(secret))
        expected = {"inner": {"apikey": REDACTED}} if key == "outer" else REDACTED
        assert line[key] == expected, name
        assert (line["where"], line["n"]) == (name, 1)


SCOPED: list[dict[str, Any] | None] = [None, {"n": 1}, {"n": 2, "token": "SECRET-scoped"}]


async def test_a_line_in_a_request_scope_carries_its_request_id_on_both_paths(hp: HostdProcess) -> None:
    client, _ = await plugin(hp, "scoped")

    async def do_log(params: dict[str, Any]) -> Any:
        scope = params["host_callback_id"]
        for i, fields in enumerate(SCOPED):
            call: dict[str, Any] = {"level": "warn", "message": f"scoped {i}", "host_callback_id": scope}
            if fields is not None:
                call["fields"] = fields
            await client.call("host.log", call, timeout=T)
        return {}

    client.handlers["do_log"] = do_log
    async with client, await hp.connect_control() as ctl:
        await ctl.call("hostd.invoke", {"plugin_id": "scoped", "method": "do_log", "request_id": "req-9"}, timeout=T)
        lines = await hp.wait_log_count('"msg":"scoped ', 3, timeout=T)
    for i, (line, fields) in enumerate(zip(lines, SCOPED, strict=True)):
        written = orjson.loads(line)
        assert written["request_id"] == "req-9"
        assert line.encode() == reference(written, "warn", f"scoped {i}", fields)
    assert not any("SECRET-scoped" in line for line in hp.stderr_lines)


async def test_an_over_long_line_still_goes_through_the_record_path_and_is_cut(
    short_tmp: Path, command: list[str] | None
) -> None:
    config = short_tmp / "hostd.toml"
    config.write_text("[log]\nmax_line_bytes = 512\n")
    async with running_hostd(short_tmp, "--config", str(config), command=command) as hp:
        client, _ = await plugin(hp, "long")
        async with client:
            await client.call(
                "host.log", {"level": "info", "message": "long", "fields": {"blob": "x" * 2000}}, timeout=T
            )
        line = await hp.wait_log('"msg":"long"', timeout=T)
    assert len(line) + 1 <= 512
    assert orjson.loads(line)["truncated"] is True


# The key check the shortcut rests on -------------------------------------------------------


def test_plain_keys_are_exactly_the_keys_merge_redacted_copies_unchanged() -> None:
    """For scalar values: plain_keys(fields) holds only when merge_redacted would add every
    field as it is, in order; a key it refuses is one merge_redacted changes or drops."""
    rng = random.Random(16)
    alphabet = string.ascii_letters + string.digits + "-_. \t\u212a\u00e9"
    words = ["token", "Secret", "PASS_word", "api-key", "cookie", "authorization", "ts", "msg", "plugin"]
    base = {"ts": "t", "level": "info", "msg": "m", "plugin": "p", "session": "s"}
    for _ in range(5000):
        fields: dict[str, Any] = {}
        for _ in range(rng.randint(1, 5)):
            key = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
            if rng.random() < 0.3:
                key = rng.choice(["", " ", "x-"]) + rng.choice(words) + rng.choice(["", " ", "_id"])
            fields[key] = rng.choice([1, "v", None, 2.5, True])
        record = dict(base)
        merge_redacted(record, fields)
        unchanged = list(record.items()) == [*base.items(), *fields.items()]
        assert plain_keys(fields) == unchanged, fields


def test_the_plain_key_set_is_bounded_and_keeps_no_long_keys() -> None:
    plain_keys({"k" * (SECRET_CACHE_MAX_KEY_CHARS + 1): 1})
    assert "k" * (SECRET_CACHE_MAX_KEY_CHARS + 1) not in PLAIN_KEYS
    for n in range(SECRET_CACHE_MAX_KEYS + 10):
        assert plain_keys({f"key{n}": 1})
    entries, chars = plain_keys_size()
    assert entries <= SECRET_CACHE_MAX_KEYS
    assert chars <= SECRET_CACHE_MAX_KEYS * SECRET_CACHE_MAX_KEY_CHARS


# Logger.emit_encoded and the writer -----------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["C writer", "Python writer"])
def c_writer(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _pipe_logger(c_writer: bool, **kw: Any) -> tuple[Logger, int, int]:
    read_fd, write_fd = os.pipe()
    return Logger("trace", fd=write_fd, c_writer=c_writer, **kw), read_fd, write_fd


def test_emit_encoded_declines_text_and_journald_lines_and_over_long_ones() -> None:
    parts = [b"", b',"level":"info","msg":"m"}\n']
    for logger in (Logger("info", fd=2, fmt="text"), Logger("info", fd=2, fmt="json", max_line_bytes=16)):
        try:
            assert logger.emit_encoded(list(parts)) is False
            assert logger.queued_bytes == 0 and logger.dropped == 0
        finally:
            logger.flush()
    journal = Logger("info", fd=2, fmt="json")
    try:
        journal.journal = True
        journal.set_format("json")
        assert journal.emit_encoded(list(parts)) is False
    finally:
        journal.flush()


def test_emit_encoded_counts_drops_when_the_queue_is_full(c_writer: bool) -> None:
    logger, read_fd, write_fd = _pipe_logger(c_writer, max_queue_bytes=64 * 1024)  # nobody reads the pipe
    tail = b',"level":"info","msg":"' + b"y" * 1000 + b'"}\n'
    for _ in range(5000):
        assert logger.emit_encoded([b"", tail]) is True
    assert logger.dropped > 0
    assert logger.queued_bytes <= 64 * 1024
    os.close(read_fd)  # the writer's next write fails; it gives up on the rest
    logger.flush()
    os.close(write_fd)


def test_the_writer_loses_no_line_and_keeps_their_order(c_writer: bool) -> None:
    """The writer takes batches (a slice and a del; in C, a buffer swap) while the caller
    appends: every line arrives once, in order."""
    logger, read_fd, write_fd = _pipe_logger(c_writer)
    received = bytearray()

    def read() -> None:
        while chunk := os.read(read_fd, 1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    count = 60_000
    for n in range(count):
        if not logger.emit_encoded([b"", b',"level":"info","msg":"m","n":%d}\n' % n]):
            raise AssertionError("declined")
    logger.flush(timeout=30)
    os.close(write_fd)
    reader.join(30)
    os.close(read_fd)
    assert logger.dropped == 0
    assert [orjson.loads(line)["n"] for line in bytes(received).splitlines()] == list(range(count))
