"""``host.auth.*`` (PROTOCOL.md §8) against a real hostd on real temporary directories.

One hostd serves the whole module (starting one per test would dominate the run time);
each test gets the auth directory emptied (and recreated if a test removed it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hostd.client import Client, RpcError
from hostd.credentials import auth_index
from hostd.errors import HostCallFailed
from hostd.gocompat import format_rfc3339_nano as format_time
from hostd.gocompat import go_lower, go_trim, parse_go_bool, parse_rfc3339
from hostd.handlers.auth import check_weight, parse_priority, validate_save
from tests.support.hostd_proc import HostdProcess, start_hostd

pytestmark = pytest.mark.anyio

ZERO = "0001-01-01T00:00:00Z"
STAMP = "2026-11-25T11:59:00.123Z"
STAMP_NS = int(datetime(2026, 11, 25, 11, 59, tzinfo=UTC).timestamp()) * 10**9 + 123_000_000
TIMES = ("modtime", "updated_at", "created_at", "last_refresh", "next_retry_after")


@pytest.fixture(scope="module")
def module_tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hostd-auth-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture(scope="module")
async def auth_hostd(module_tmp: Path) -> AsyncIterator[HostdProcess]:
    (module_tmp / "auth").mkdir()
    hp = await start_hostd(module_tmp, "--auth-dir", str(module_tmp / "auth"))
    try:
        yield hp
    finally:
        await hp.stop()


@pytest.fixture
def auth_dir(module_tmp: Path) -> Path:
    """The served auth directory, empty; ``outside`` next to it is emptied too."""
    for name in ("auth", "outside"):
        d = module_tmp / name
        if d.is_symlink() or d.is_file():
            d.unlink()
        elif d.exists():
            shutil.rmtree(d)
        d.mkdir()
    return module_tmp / "auth"


@pytest.fixture
def outside(auth_dir: Path) -> Path:
    return auth_dir.parent / "outside"


@pytest.fixture
async def client(auth_hostd: HostdProcess, auth_dir: Path) -> AsyncIterator[Client]:
    async with await auth_hostd.connect() as c:
        yield c


def write(d: Path, name: str, content: str | bytes, mtime_ns: int = STAMP_NS) -> Path:
    path = d / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def index_of(type_: str, path: Path | str) -> str:
    """The spec's formula, written out independently of hostd's code."""
    seed_type = type_.strip().lower() or "unknown"
    return hashlib.sha256(f"{seed_type}:{path}".encode()).digest()[:8].hex()


async def call(c: Client, method: str, params: Any = None) -> Any:
    return await c.call(method, params, timeout=10)


async def fails(c: Client, method: str, params: Any = None) -> RpcError:
    with pytest.raises(RpcError) as e:
        await c.call(method, params, timeout=10)
    return e.value


async def call_raw(c: Client, method: str, params: bytes) -> Any:
    """Send ``params`` as the exact bytes given (to check byte-exact saves)."""
    rid = c.next_id()
    answer = c.expect(rid)
    await c.send_raw(b'{"jsonrpc":"2.0","id":%d,"method":"%s","params":%s}\n' % (rid, method.encode(), params))
    async with asyncio.timeout(10):
        return await answer


async def files(c: Client) -> list[dict[str, Any]]:
    result = await call(c, "host.auth.list")
    assert isinstance(result["files"], list)
    return result["files"]


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# Pure functions -------------------------------------------------------------------------


def test_auth_index_spec_vectors() -> None:
    assert auth_index("claude", "/tmp/auth/claude-a.json") == "76a152cf572ee276"
    assert auth_index("", "/tmp/auth/x.json") == "3c9365395d9d83e7"


def test_auth_index_seed_type_is_trimmed_and_lowercased() -> None:
    assert auth_index(" Claude\t", "/tmp/auth/claude-a.json") == "76a152cf572ee276"
    assert auth_index("  ", "/tmp/auth/x.json") == "3c9365395d9d83e7"
    assert auth_index("unknown", "/tmp/auth/x.json") == "3c9365395d9d83e7"


def test_format_time_is_utc_nanoseconds_with_trailing_zeros_trimmed() -> None:
    assert format_time(None) == ZERO
    assert format_time(STAMP_NS) == STAMP
    assert format_time(STAMP_NS - 123_000_000) == "2026-11-25T11:59:00Z"
    assert format_time(STAMP_NS + 456_789) == "2026-11-25T11:59:00.123456789Z"
    assert format_time(-1) == "1969-12-31T23:59:59.999999999Z"
    assert format_time(parse_rfc3339(ZERO)) == ZERO


def test_parse_rfc3339_accepts_what_go_time_parse_accepts() -> None:
    assert format_time(parse_rfc3339("2026-01-02T03:04:05.5+01:00")) == "2026-01-02T02:04:05.5Z"
    assert format_time(parse_rfc3339("2026-01-02T03:04:05,25Z")) == "2026-01-02T03:04:05.25Z"
    assert format_time(parse_rfc3339("2026-01-02T3:04:05Z")) == "2026-01-02T03:04:05Z"
    assert format_time(parse_rfc3339("2026-01-02T03:04:05.1234567891Z")) == "2026-01-02T03:04:05.123456789Z"
    assert format_time(parse_rfc3339("2024-02-29T23:30:00-01:30")) == "2024-03-01T01:00:00Z"
    for bad in (
        "2026-01-02",
        "2026-01-02 03:04:05Z",
        "2026-01-02T03:04:05z",
        "2026-01-02T03:04:05",
        "2026-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:60Z",
        "2026-01-02T03:04:05+0100",
        "2026-01-02T03:04:05.Z",
        "\uff12\uff10\uff12\uff16-01-02T03:04:05Z",  # fullwidth digits
    ):
        assert parse_rfc3339(bad) is None, bad


def test_parse_go_bool_accepts_exactly_go_strings() -> None:
    for text in ("1", "t", "T", "TRUE", "true", "True"):
        assert parse_go_bool(text) is True
    for text in ("0", "f", "F", "FALSE", "false", "False"):
        assert parse_go_bool(text) is False
    for text in ("yes", "on", "tRUE", "", " true", "2"):
        assert parse_go_bool(text) is None


def test_parse_priority_truncates_numbers_and_reads_integer_strings() -> None:
    assert parse_priority(1.9) == 1
    assert parse_priority(-2.7) == -2
    assert parse_priority(7) == 7
    assert parse_priority(" 12 ") == 12
    assert parse_priority("+5") == 5
    assert parse_priority("-0") == 0
    for bad in ("1.5", "1_000", "abc", "", True, None, [1], {"a": 1}, "99999999999999999999", 1e300):
        assert parse_priority(bad) is None, bad


def test_check_weight_follows_the_proxy_rules() -> None:
    for ok in (7, 7.0, "7", " 12 ", "", -5, -2.0, "-3", 0, 1_000_000, 1_000_000.0):
        assert check_weight(ok) == "", ok
    assert check_weight(1.5) == "weight must be an integer"
    assert check_weight("1.5") == "weight must be an integer"
    assert check_weight("abc") == "weight must be an integer"
    assert check_weight(True) == "weight must be an integer"
    assert check_weight(None) == "weight must be an integer"
    assert check_weight([7]) == "weight must be an integer"
    assert check_weight(1_000_001) == "weight must not exceed 1000000"
    assert check_weight("1000001") == "weight must not exceed 1000000"


def test_go_trim_and_lower_follow_go() -> None:
    assert go_trim("\u00a0 x \u3000\n") == "x"
    assert go_trim("\x1cx\x1f") == "\x1cx\x1f"  # not spaces to Go, unlike str.strip()
    assert go_lower("\u0391\u03a3") == "\u03b1\u03c3"  # capital alpha sigma: no final-sigma rule
    assert go_lower("\u0130X.JSON") == "ix.json"


def test_validate_save_trims_the_name_and_reads_the_weight() -> None:
    assert validate_save("  a.json\t", b"{}", 1024)[0] == "a.json"
    assert validate_save("a.json", b'{"weight":" 7 ","x":[1,{"weight":9}]}', 1024)[1] == " 7 "


def test_validate_save_refuses_more_than_the_limit_before_parsing() -> None:
    with pytest.raises(HostCallFailed) as e:
        validate_save("a.json", b"[" + b" " * 2000 + b"]", 1024)  # not an object either
    assert e.value.message == "auth file is too large"


# host.auth.list ---------------------------------------------------------------------------


async def test_list_of_an_empty_directory_is_an_empty_array(client: Client) -> None:
    assert await call(client, "host.auth.list") == {"files": []}
    assert await call(client, "host.auth.list", {}) == {"files": []}


async def test_list_params_array_is_invalid_params(client: Client) -> None:
    e = await fails(client, "host.auth.list", [])
    assert e.code == -32602


async def test_list_entry_has_every_field(client: Client, auth_dir: Path) -> None:
    content = {
        "type": "  Claude ",
        "email": " someone@example.com ",
        "project_id": " proj-1 ",
        "note": "  a note ",
        "priority": 3.9,
        "websockets": " True ",
        "last_refresh": "2026-11-25T12:59:00.120+01:00",
        "access_token": "secret",
    }
    text = json.dumps(content)
    path = write(auth_dir, "claude-a.json", text)
    assert await files(client) == [
        {
            "id": "claude-a.json",
            "auth_index": index_of("claude", path),
            "name": "claude-a.json",
            "type": "claude",
            "provider": "claude",
            "label": " someone@example.com ",
            "status": "active",
            "source": "file",
            "path": str(path),
            "size": len(text),
            "modtime": STAMP,
            "updated_at": STAMP,
            "created_at": ZERO,
            "last_refresh": "2026-11-25T11:59:00.12Z",
            "next_retry_after": ZERO,
            "email": "someone@example.com",
            "project_id": "proj-1",
            "priority": 3,
            "note": "a note",
            "websockets": True,
        }
    ]


async def test_list_omits_empty_strings_zero_numbers_and_false(client: Client, auth_dir: Path) -> None:
    text = '{"type":"codex","email":"  ","project_id":"","note":" ","priority":0,"websockets":"false","disabled":false}'
    path = write(auth_dir, "codex.json", text)
    assert await files(client) == [
        {
            "id": "codex.json",
            "auth_index": index_of("codex", path),
            "name": "codex.json",
            "type": "codex",
            "provider": "codex",
            "label": "codex",
            "status": "active",
            "source": "file",
            "path": str(path),
            "size": len(text),
            "modtime": STAMP,
            "updated_at": STAMP,
            "created_at": ZERO,
            "last_refresh": ZERO,
            "next_retry_after": ZERO,
        }
    ]


async def test_list_label_is_the_email_as_stored_else_the_type(client: Client, auth_dir: Path) -> None:
    write(auth_dir, "a.json", '{"type":"gemini","email":" e@x\\t"}')
    write(auth_dir, "b.json", '{"type":" Gemini "}')
    write(auth_dir, "c.json", '{"type":"gemini","email":" \\u00a0 "}')
    write(auth_dir, "d.json", '{"type":"gemini","email":5}')
    got = {f["name"]: f for f in await files(client)}
    assert got["a.json"]["label"] == " e@x\t" and got["a.json"]["email"] == "e@x"
    assert got["b.json"]["label"] == "gemini" and got["b.json"]["type"] == "gemini"
    assert got["c.json"]["label"] == "gemini" and "email" not in got["c.json"]
    assert got["d.json"]["label"] == "gemini" and "email" not in got["d.json"]


async def test_list_lowercases_type_and_provider(client: Client, auth_dir: Path) -> None:
    path = write(auth_dir, "a.json", '{"type":"\\tCLAUDE-Code "}')
    [listed] = await files(client)
    assert (listed["type"], listed["provider"], listed["label"]) == ("claude-code", "claude-code", "claude-code")
    assert listed["auth_index"] == index_of("claude-code", path)


async def test_list_disabled_true_gives_status_disabled(client: Client, auth_dir: Path) -> None:
    write(auth_dir, "off.json", '{"type":"claude","disabled":true}')
    write(auth_dir, "str.json", '{"type":"claude","disabled":"true"}')
    got = {f["name"]: f for f in await files(client)}
    assert got["off.json"]["status"] == "disabled" and got["off.json"]["disabled"] is True
    assert got["str.json"]["status"] == "active" and "disabled" not in got["str.json"]


async def test_list_priority_is_a_truncated_number_or_an_integer_string(client: Client, auth_dir: Path) -> None:
    cases = {"p1": "2.9", "p2": "-4.5", "p3": '" 12 "', "p4": '"1.5"', "p5": "true", "p6": '"x"', "p7": "0", "p8": "10"}
    for name, value in cases.items():
        write(auth_dir, f"{name}.json", f'{{"type":"t","priority":{value}}}')
    got = {f["name"]: f.get("priority") for f in await files(client)}
    assert got == {
        "p1.json": 2,
        "p2.json": -4,
        "p3.json": 12,
        "p4.json": None,
        "p5.json": None,
        "p6.json": None,
        "p7.json": None,
        "p8.json": 10,
    }


async def test_list_websockets_is_a_bool_or_a_go_parsebool_string(client: Client, auth_dir: Path) -> None:
    cases = {"w1": "true", "w2": '"T"', "w3": '" 1 "', "w4": '"TRUE"', "w5": '"yes"', "w6": '"False"', "w7": "1"}
    for name, value in cases.items():
        write(auth_dir, f"{name}.json", f'{{"type":"t","websockets":{value}}}')
    got = {f["name"]: f.get("websockets") for f in await files(client)}
    assert got == {
        "w1.json": True,
        "w2.json": True,
        "w3.json": True,
        "w4.json": True,
        "w5.json": None,
        "w6.json": None,
        "w7.json": None,
    }


async def test_list_last_refresh_only_from_an_rfc3339_string(client: Client, auth_dir: Path) -> None:
    write(auth_dir, "r1.json", '{"type":"t","last_refresh":"2026-01-02T03:04:05Z"}')
    write(auth_dir, "r2.json", '{"type":"t","last_refresh":"yesterday"}')
    write(auth_dir, "r3.json", '{"type":"t","last_refresh":1767323045}')
    got = {f["name"]: f["last_refresh"] for f in await files(client)}
    assert got == {"r1.json": "2026-01-02T03:04:05Z", "r2.json": ZERO, "r3.json": ZERO}


async def test_list_times_are_always_present(client: Client, auth_dir: Path) -> None:
    write(auth_dir, "a.json", '{"type":"t"}')
    write(auth_dir, "b.json", '{"type":"t","last_refresh":null}')
    got = await files(client)
    assert len(got) == 2
    for f in got:
        assert all(isinstance(f[key], str) for key in TIMES), f
        assert f["modtime"] == f["updated_at"] == STAMP


@pytest.mark.parametrize(
    "content",
    [
        b"[1, 2]",
        b"not json",
        b"",
        b'"a string"',
        b"null",
        b"\xef\xbb\xbf{}",
        b'{"type":"claude"',
        b'{"type":"claude","n": 1' + b"0" * 400 + b"}",
        b"{}",
        b'{"type":""}',
        b'{"type":"  "}',
        b'{"type":7}',
        b'{"type":null}',
    ],
    ids=[
        "array",
        "garbage",
        "empty",
        "string",
        "null",
        "bom",
        "truncated",
        "number-overflows-float64",
        "no-type",
        "empty-type",
        "blank-type",
        "number-type",
        "null-type",
    ],
)
async def test_list_skips_files_without_a_type_not_json_or_null(
    auth_hostd: HostdProcess, client: Client, auth_dir: Path, content: bytes
) -> None:
    write(auth_dir, "odd.json", content)
    keep = write(auth_dir, "keep.json", '{"type":"claude"}')
    assert [f["auth_index"] for f in await files(client)] == [index_of("claude", keep)]


async def test_list_sorts_by_lowercased_name_then_exact_name(client: Client, auth_dir: Path) -> None:
    for name in ("b.json", "a.json", "B.JSON", "A.json", "c.Json", "_z.json"):
        write(auth_dir, name, '{"type":"t"}')
    assert [f["name"] for f in await files(client)] == ["_z.json", "A.json", "a.json", "B.JSON", "b.json", "c.Json"]


async def test_list_takes_only_json_files_directly_in_the_directory(client: Client, auth_dir: Path) -> None:
    t = '{"type":"t"}'
    write(auth_dir, "keep.json", t)
    write(auth_dir, "notes.txt", t)
    write(auth_dir, "keep.json.bak", t)
    write(auth_dir, ".hostd-save-0123.tmp", t)
    (auth_dir / "dir.json").mkdir()
    (auth_dir / "sub").mkdir()
    write(auth_dir / "sub", "nested.json", t)
    os.mkfifo(auth_dir / "pipe.json")
    assert [f["name"] for f in await files(client)] == ["keep.json"]


async def test_list_follows_symlinks_inside_and_skips_those_resolving_outside(
    client: Client, auth_dir: Path, outside: Path
) -> None:
    real = write(auth_dir, "real.json", '{"type":"claude"}')
    (auth_dir / "alias.json").symlink_to("real.json")
    write(outside, "secret.json", '{"type":"claude","token":"outside"}')
    (auth_dir / "escape.json").symlink_to(outside / "secret.json")
    (auth_dir / "escape-rel.json").symlink_to("../outside/secret.json")
    (auth_dir / "hop.json").symlink_to("escape.json")  # inside, then out
    got = await files(client)
    assert [f["name"] for f in got] == ["alias.json", "real.json"]
    alias = got[0]
    assert alias["path"] == str(auth_dir / "alias.json")  # lexical path, not the target's
    assert alias["auth_index"] == index_of("claude", auth_dir / "alias.json")
    assert alias["type"] == "claude" and alias["size"] == real.stat().st_size


async def test_list_rereads_the_directory_on_each_call(client: Client, auth_dir: Path) -> None:
    assert await files(client) == []
    path = write(auth_dir, "new.json", '{"type":"a"}')
    assert [f["auth_index"] for f in await files(client)] == [index_of("a", path)]
    write(auth_dir, "new.json", '{"type":"b"}')
    assert [f["auth_index"] for f in await files(client)] == [index_of("b", path)]
    path.unlink()
    assert await files(client) == []


async def test_list_of_a_missing_directory_fails(client: Client, auth_dir: Path) -> None:
    auth_dir.rmdir()
    e = await fails(client, "host.auth.list")
    assert e.code == -32000
    assert e.message == f"failed to read auth dir: open {auth_dir}: no such file or directory"


async def test_list_of_a_file_instead_of_a_directory_fails(client: Client, auth_dir: Path) -> None:
    auth_dir.rmdir()
    auth_dir.write_text("{}")
    e = await fails(client, "host.auth.list")
    assert e.message.startswith("failed to read auth dir: ")


async def test_every_method_without_a_directory_is_unavailable(hostd: HostdProcess) -> None:
    """conftest's hostd runs with ``--auth-dir ''``."""
    async with await hostd.connect() as c:
        for method, params in (
            ("host.auth.list", None),
            ("host.auth.get", {"auth_index": "76a152cf572ee276"}),
            ("host.auth.get_runtime", {"auth_index": "76a152cf572ee276"}),
            ("host.auth.save", {"name": "a.json", "json": {}}),
        ):
            e = await fails(c, method, params)
            assert (e.code, e.message) == (-32000, "auth directory is unavailable"), method


# host.auth.get / get_runtime -----------------------------------------------------------


async def test_get_embeds_the_file_json_object(client: Client, auth_dir: Path) -> None:
    content = {"type": "claude", "access_token": "tok", "nested": {"list": [1, 2.5, "x\ny"]}}
    path = write(auth_dir, "claude-a.json", json.dumps(content, indent=2) + "\r\n")  # newlines between tokens
    index = index_of("claude", path)
    result = await call(client, "host.auth.get", {"auth_index": index})
    assert result == {"auth_index": index, "name": "claude-a.json", "path": str(path), "json": content}


async def test_get_trims_the_auth_index(client: Client, auth_dir: Path) -> None:
    path = write(auth_dir, "x.json", '{"a":1}')
    index = index_of("", path)
    result = await call(client, "host.auth.get", {"auth_index": f" \t{index}\n"})
    assert result["auth_index"] == index and result["json"] == {"a": 1}


async def test_get_through_a_symlink_inside_the_directory(client: Client, auth_dir: Path) -> None:
    write(auth_dir, "real.json", '{"type":"claude","v":1}')
    (auth_dir / "alias.json").symlink_to("real.json")
    index = index_of("claude", auth_dir / "alias.json")
    result = await call(client, "host.auth.get", {"auth_index": index})
    assert result["name"] == "alias.json" and result["json"] == {"type": "claude", "v": 1}


async def test_get_cannot_reach_a_file_outside_through_a_symlink(client: Client, auth_dir: Path, outside: Path) -> None:
    write(outside, "secret.json", '{"type":"claude"}')
    (auth_dir / "escape.json").symlink_to(outside / "secret.json")
    for index in (index_of("claude", auth_dir / "escape.json"), index_of("", auth_dir / "escape.json")):
        e = await fails(client, "host.auth.get", {"auth_index": index})
        assert e.message == f"auth not found for auth_index {index}"


async def test_get_errors_in_order(client: Client, auth_dir: Path) -> None:
    for params in ({}, {"auth_index": ""}, {"auth_index": "  "}, {"auth_index": None}):
        e = await fails(client, "host.auth.get", params)
        assert (e.code, e.message) == (-32000, "auth_index is required"), params
    e = await fails(client, "host.auth.get", {"auth_index": "0000000000000000"})
    assert e.message == "auth not found for auth_index 0000000000000000"

    (auth_dir / "ghost.json").symlink_to("gone.json")  # dangling: not listed, not readable
    ghost = index_of("", auth_dir / "ghost.json")
    assert await files(client) == []
    e = await fails(client, "host.auth.get", {"auth_index": ghost})
    assert e.message == f"auth file not found for auth_index {ghost}"

    for name, content in (("empty.json", ""), ("blank.json", " \n\t\u00a0 ")):
        index = index_of("", write(auth_dir, name, content))
        e = await fails(client, "host.auth.get", {"auth_index": index})
        assert e.message == f"auth file is empty for auth_index {index}"

    for name, content in (("bad.json", "{nope"), ("arr.json", "[1]"), ("null.json", "null")):
        index = index_of("", write(auth_dir, name, content))
        e = await fails(client, "host.auth.get", {"auth_index": index})
        assert e.code == -32000
        assert e.message.startswith(f"invalid auth file for auth_index {index}: "), e.message


async def test_get_runtime_returns_the_list_entry(client: Client, auth_dir: Path) -> None:
    write(auth_dir, "a.json", '{"type":"Claude","email":"e@x","priority":"2","note":" n "}')
    write(auth_dir, "b.json", '{"type":"codex","disabled":true,"websockets":"t"}')
    listed_files = await files(client)
    assert len(listed_files) == 2
    for listed in listed_files:
        result = await call(client, "host.auth.get_runtime", {"auth_index": f" {listed['auth_index']} "})
        assert result == {"auth": listed}


async def test_get_runtime_errors(client: Client, auth_dir: Path) -> None:
    e = await fails(client, "host.auth.get_runtime", {"auth_index": " "})
    assert (e.code, e.message) == (-32000, "auth_index is required")
    e = await fails(client, "host.auth.get_runtime", {"auth_index": "feedfacefeedface"})
    assert e.message == "auth not found for auth_index feedfacefeedface"


@pytest.mark.parametrize(
    ("method", "params", "what", "field"),
    [
        ("host.auth.list", {"host_callback_id": 5}, "host auth list", "host_callback_id"),
        ("host.auth.get", {"auth_index": 5}, "host auth get", "auth_index"),
        ("host.auth.get_runtime", {"auth_index": []}, "host auth get runtime", "auth_index"),
        ("host.auth.save", {"name": 5, "json": {}}, "host auth save", "name"),
    ],
)
async def test_decode_errors_name_the_method_and_field(
    client: Client, method: str, params: dict[str, Any], what: str, field: str
) -> None:
    e = await fails(client, method, params)
    assert e.code == -32602
    assert e.message.startswith(f"decode {what} request: ")
    assert f"$.{field}" in e.message


# host.auth.save -----------------------------------------------------------------------


async def test_save_writes_the_json_text_byte_for_byte(client: Client, auth_dir: Path) -> None:
    text = b'{"type" :"claude",  "z":1,"a":[1.50, 2e3, "\\u00e9\\n"],\t"email":"\xc3\xa9@x"}'
    result = await call_raw(client, "host.auth.save", b'{"name":"claude-a.json","json":   ' + text + b"  }")
    path = auth_dir / "claude-a.json"
    assert result == {"name": "claude-a.json", "path": str(path)}
    assert path.read_bytes() == text
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    assert listing(auth_dir) == ["claude-a.json"]  # no temp file left behind
    listed = await files(client)
    assert [(f["name"], f["auth_index"]) for f in listed] == [("claude-a.json", index_of("claude", path))]


async def test_save_then_get_round_trips(client: Client, auth_dir: Path) -> None:
    content = {"type": "codex", "refresh_token": "r", "weight": 3}
    await call(client, "host.auth.save", {"name": "codex.json", "json": content})
    index = index_of("codex", auth_dir / "codex.json")
    assert (await call(client, "host.auth.get", {"auth_index": index}))["json"] == content


async def test_save_trims_the_name_and_keeps_its_case(client: Client, auth_dir: Path) -> None:
    result = await call(client, "host.auth.save", {"name": "  Upper.JSON\t", "json": {}})
    assert result == {"name": "Upper.JSON", "path": str(auth_dir / "Upper.JSON")}
    assert listing(auth_dir) == ["Upper.JSON"]


async def test_save_over_an_existing_file_replaces_it_with_mode_0600(
    client: Client, auth_dir: Path, outside: Path
) -> None:
    # The old file is a hard link shared with a file outside: replacing (not rewriting
    # or chmodding) the target leaves the outside file's bytes and mode untouched.
    old = write(outside, "shared.json", '{"old":true}')
    old.chmod(0o644)
    os.link(old, auth_dir / "a.json")
    await call(client, "host.auth.save", {"name": "a.json", "json": {"new": True}})
    target = auth_dir / "a.json"
    assert json.loads(target.read_bytes()) == {"new": True}
    assert stat.S_IMODE(target.lstat().st_mode) == 0o600
    assert old.read_bytes() == b'{"old":true}' and stat.S_IMODE(old.stat().st_mode) == 0o644
    assert target.stat().st_ino != old.stat().st_ino


SAVE_ERRORS: list[tuple[dict[str, Any], str]] = [
    # Each request also breaks every later rule, so only the first rule can be reported.
    ({"json": "x", "name": ""}, "invalid auth file name"),
    ({"name": None}, "invalid auth file name"),
    ({"name": "   "}, "invalid auth file name"),
    ({"name": "a/b.txt", "json": "x"}, "invalid auth file name"),
    ({"name": "../x.json", "json": "x"}, "invalid auth file name"),
    ({"name": "..\\x.json", "json": "x"}, "invalid auth file name"),
    ({"name": "C:x.json", "json": "x"}, "invalid auth file name"),
    ({"name": "c:\\x.json", "json": "x"}, "invalid auth file name"),
    ({"name": "x.txt", "json": "x"}, "auth file name must end with .json"),
    ({"name": "x.json.bak", "json": "x"}, "auth file name must end with .json"),
    ({"name": "x.json"}, "json is required"),
    ({"name": "x.json", "json": "{}"}, "invalid auth json: "),
    ({"name": "x.json", "json": ""}, "invalid auth json: "),
    ({"name": "x.json", "json": [{"weight": 1.5}]}, "invalid auth json: "),
    ({"name": "x.json", "json": 7}, "invalid auth json: "),
    ({"name": "x.json", "json": True}, "invalid auth json: "),
    ({"name": "x.json", "json": None}, "invalid auth json: "),
    ({"name": "x.json", "json": {"weight": 1.5}}, "invalid auth weight: "),
    ({"name": "x.json", "json": {"weight": 1000001}}, "invalid auth weight: "),
    ({"name": "x.json", "json": {"weight": 1e7}}, "invalid auth weight: "),
    ({"name": "x.json", "json": {"weight": "7.5"}}, "invalid auth weight: "),
    ({"name": "x.json", "json": {"weight": "seven"}}, "invalid auth weight: "),
    ({"name": "x.json", "json": {"weight": None}}, "invalid auth weight: "),
    ({"name": "x.json", "json": {"weight": True}}, "invalid auth weight: "),
]


@pytest.mark.parametrize(("params", "message"), SAVE_ERRORS, ids=[repr(p)[:40] for p, _ in SAVE_ERRORS])
async def test_save_validation_in_order_and_nothing_written(
    client: Client, auth_dir: Path, params: dict[str, Any], message: str
) -> None:
    write(auth_dir, "x.json", '{"keep":1}')
    e = await fails(client, "host.auth.save", params)
    assert e.code == -32000
    if message.endswith(": "):
        assert e.message.startswith(message), e.message
    else:
        assert e.message == message
    assert listing(auth_dir) == ["x.json"]
    assert (auth_dir / "x.json").read_bytes() == b'{"keep":1}'


async def test_save_refuses_an_overflowing_number_as_go_does(client: Client, auth_dir: Path) -> None:
    with pytest.raises(RpcError) as e:
        await call_raw(client, "host.auth.save", b'{"name":"x.json","json":{"n":1' + b"0" * 400 + b"}}")
    assert e.value.message.startswith("invalid auth json: ")
    assert listing(auth_dir) == []


@pytest.mark.parametrize("weight", ["7", 7.0, " 12 ", "", -5, 0, 1000000, "-3"])
async def test_save_accepts_integer_weights(client: Client, auth_dir: Path, weight: Any) -> None:
    await call(client, "host.auth.save", {"name": "w.json", "json": {"weight": weight}})
    assert json.loads((auth_dir / "w.json").read_bytes()) == {"weight": weight}


async def test_save_replaces_a_symlink_instead_of_writing_through_it(
    client: Client, auth_dir: Path, outside: Path
) -> None:
    victim = write(outside, "victim.json", '{"victim":true}')
    victim.chmod(0o644)
    link = auth_dir / "a.json"
    link.symlink_to(victim)
    result = await call(client, "host.auth.save", {"name": "a.json", "json": {"new": 1}})
    assert result["path"] == str(link)
    assert not link.is_symlink() and stat.S_ISREG(link.lstat().st_mode)
    assert json.loads(link.read_bytes()) == {"new": 1}
    assert stat.S_IMODE(link.lstat().st_mode) == 0o600
    assert victim.read_bytes() == b'{"victim":true}' and stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert listing(outside) == ["victim.json"]


async def test_save_replaces_a_dangling_symlink_without_creating_its_target(
    client: Client, auth_dir: Path, outside: Path
) -> None:
    (auth_dir / "a.json").symlink_to(outside / "created.json")
    await call(client, "host.auth.save", {"name": "a.json", "json": {}})
    assert listing(outside) == []
    assert (auth_dir / "a.json").read_bytes() == b"{}" and not (auth_dir / "a.json").is_symlink()


async def test_save_onto_a_directory_fails_and_leaves_nothing(client: Client, auth_dir: Path) -> None:
    (auth_dir / "d.json").mkdir()
    e = await fails(client, "host.auth.save", {"name": "d.json", "json": {}})
    assert e.code == -32000
    assert e.message.startswith("failed to write auth file: "), e.message
    assert listing(auth_dir) == ["d.json"] and (auth_dir / "d.json").is_dir()


async def test_save_into_a_missing_directory_fails_without_creating_it(client: Client, auth_dir: Path) -> None:
    auth_dir.rmdir()
    e = await fails(client, "host.auth.save", {"name": "a.json", "json": {}})
    assert e.message == f"failed to write auth file: open {auth_dir}: no such file or directory"
    assert not auth_dir.exists()


async def test_concurrent_saves_of_one_name_leave_one_complete_file(auth_hostd: HostdProcess, auth_dir: Path) -> None:
    versions = [{"type": "claude", "v": i, "pad": "x" * (i * 50_000)} for i in range(12)]
    clients = [await auth_hostd.connect() for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(
                clients[i % 3].call("host.auth.save", {"name": "same.json", "json": v}, timeout=30)
                for i, v in enumerate(versions)
            )
        )
    finally:
        for c in clients:
            await c.aclose()
    assert all(r == {"name": "same.json", "path": str(auth_dir / "same.json")} for r in results)
    assert listing(auth_dir) == ["same.json"]
    assert json.loads((auth_dir / "same.json").read_bytes()) in versions


async def test_list_and_get_through_a_symlinked_auth_directory_use_lexical_paths(
    client: Client, auth_dir: Path, outside: Path
) -> None:
    real_dir = outside / "real-auth"
    real_dir.mkdir()
    auth_dir.rmdir()
    auth_dir.symlink_to(real_dir)  # the configured path is a symlink: served as given
    write(real_dir, "a.json", '{"type":"claude"}')
    (real_dir / "b.json").symlink_to(auth_dir / "a.json")  # absolute, through the configured path
    got = await files(client)
    assert [(f["name"], f["path"], f["auth_index"]) for f in got] == [
        ("a.json", str(auth_dir / "a.json"), index_of("claude", auth_dir / "a.json")),
        ("b.json", str(auth_dir / "b.json"), index_of("claude", auth_dir / "b.json")),
    ]
    result = await call(client, "host.auth.get", {"auth_index": got[1]["auth_index"]})
    assert result["json"] == {"type": "claude"}


async def test_a_name_that_is_not_utf8_is_shown_as_go_shows_it(client: Client, auth_dir: Path) -> None:
    raw_path = os.fsencode(auth_dir) + b"/\xff.json"
    fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"type":"claude"}')
    os.close(fd)
    index = hashlib.sha256(b"claude:" + raw_path).digest()[:8].hex()  # the bytes on disk
    [listed] = await files(client)
    assert listed["name"] == listed["id"] == "\ufffd.json"
    assert listed["auth_index"] == index
    assert (await call(client, "host.auth.get", {"auth_index": index}))["json"] == {"type": "claude"}


# PROTOCOL §8 parity details ------------------------------------------------------------


async def test_get_of_a_missing_directory_says_auth_not_found(client: Client, auth_dir: Path) -> None:
    auth_dir.rmdir()
    for method in ("host.auth.get", "host.auth.get_runtime"):
        e = await fails(client, method, {"auth_index": "76a152cf572ee276"})
        assert (e.code, e.message) == (-32000, "auth not found for auth_index 76a152cf572ee276"), method


async def test_get_finds_a_file_the_list_skips_but_get_runtime_does_not(client: Client, auth_dir: Path) -> None:
    path = write(auth_dir, "typeless.json", '{"token":"t"}')
    index = index_of("", path)
    assert await files(client) == []
    assert (await call(client, "host.auth.get", {"auth_index": index}))["json"] == {"token": "t"}
    e = await fails(client, "host.auth.get_runtime", {"auth_index": index})
    assert e.message == f"auth not found for auth_index {index}"


async def test_save_without_a_directory_and_with_a_bad_weight_reports_the_directory(hostd: HostdProcess) -> None:
    async with await hostd.connect() as c:
        e = await fails(c, "host.auth.save", {"name": "a.json", "json": {"type": "x", "weight": 1.5}})
        assert e.message == "auth directory is unavailable"
        e = await fails(c, "host.auth.save", {"name": "a.json", "json": [1]})  # the request comes first
        assert e.message.startswith("invalid auth json: ")


async def test_list_sees_a_change_of_the_same_size_and_mtime(client: Client, auth_dir: Path) -> None:
    path = write(auth_dir, "a.json", '{"type":"aa"}')
    assert [f["type"] for f in await files(client)] == ["aa"]
    write(auth_dir, "a.json", '{"type":"bb"}')  # same inode, size and mtime: the ctime differs
    assert [f["type"] for f in await files(client)] == ["bb"]
    assert (await files(client))[0]["auth_index"] == index_of("bb", path)


def test_store_parses_only_files_that_changed(tmp_path: Path) -> None:
    from hostd.credentials import CredentialStore

    write(tmp_path, "a.json", '{"type":"a"}')
    write(tmp_path, "b.json", '{"type":"b"}')
    store = CredentialStore(str(tmp_path))
    first = {c.name: c for c in store.scan()}
    write(tmp_path, "b.json", '{"type":"c"}')
    second = {c.name: c for c in store.scan()}
    assert second["a.json"] is first["a.json"]  # unchanged: not read or parsed again
    assert second["b.json"] is not first["b.json"] and second["b.json"].type == "c"
    (tmp_path / "a.json").unlink()
    assert [c.name for c in store.scan()] == ["b.json"]


# auth.max_file_bytes -------------------------------------------------------------------

LIMIT = 4096


@pytest.fixture(scope="module")
async def small_hostd(module_tmp: Path) -> AsyncIterator[HostdProcess]:
    (module_tmp / "small").mkdir()
    (module_tmp / "small-run").mkdir()
    config = module_tmp / "small.toml"
    config.write_text(f"[auth]\nmax_file_bytes = {LIMIT}\n")
    hp = await start_hostd(module_tmp / "small-run", "--config", str(config), "--auth-dir", str(module_tmp / "small"))
    try:
        yield hp
    finally:
        await hp.stop()


@pytest.fixture
async def small(small_hostd: HostdProcess, module_tmp: Path) -> AsyncIterator[tuple[Client, Path]]:
    d = module_tmp / "small"
    for p in d.iterdir():
        p.unlink()
    async with await small_hostd.connect() as c:
        yield c, d


def credential_of(size: int) -> bytes:
    head = b'{"type":"big","pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


async def test_save_over_max_file_bytes_is_too_large_and_writes_nothing(small: tuple[Client, Path]) -> None:
    c, d = small
    assert len(credential_of(LIMIT)) == LIMIT
    await call_raw(c, "host.auth.save", b'{"name":"ok.json","json":' + credential_of(LIMIT) + b"}")
    with pytest.raises(RpcError) as e:
        await call_raw(c, "host.auth.save", b'{"name":"big.json","json":' + credential_of(LIMIT + 1) + b"}")
    assert (e.value.code, e.value.message) == (-32000, "auth file is too large")
    assert listing(d) == ["ok.json"]


async def test_file_over_max_file_bytes_is_skipped_with_one_warning_per_version(
    small_hostd: HostdProcess, small: tuple[Client, Path]
) -> None:
    c, d = small
    path = write(d, "big.json", credential_of(LIMIT + 10))
    index = index_of("big", path)
    warned = [line for line in small_hostd.stderr_lines if "auth file is too large" in line]
    for _ in range(3):
        assert await files(c) == []
        for method in ("host.auth.get", "host.auth.get_runtime"):
            e = await fails(c, method, {"auth_index": index})
            assert e.message == f"auth not found for auth_index {index}"
    write(d, "big.json", credential_of(LIMIT + 20))  # a new version: one more warning
    assert await files(c) == []
    line = await small_hostd.wait_log('"size":4116')
    now = [line for line in small_hostd.stderr_lines if "auth file is too large" in line]
    assert len(now) == len(warned) + 2, now
    assert '"file":"big.json"' in line and "xxx" not in line


async def test_file_back_under_max_file_bytes_is_listed_again(small: tuple[Client, Path]) -> None:
    c, d = small
    write(d, "a.json", credential_of(LIMIT + 1))
    assert await files(c) == []
    write(d, "a.json", credential_of(LIMIT))
    assert [f["name"] for f in await files(c)] == ["a.json"]


# Mirrors of CLIProxyAPI's internal/pluginhost/auth_callbacks_test.go -------------------


async def test_host_auth_list_callback_falls_back_to_disk(client: Client, auth_dir: Path) -> None:
    """TestHostAuthListCallbackFallsBackToDisk: the disk entry carries name, type, email
    and a modtime."""
    write(auth_dir, "claude-a.json", '{"type":"claude","email":"c@example.com"}')
    [entry] = (await call_raw(client, "host.auth.list", b"{}"))["files"]
    assert (entry["name"], entry["type"], entry["email"]) == ("claude-a.json", "claude", "c@example.com")
    assert entry["modtime"] != ZERO


async def test_host_auth_get_callback_returns_physical_json_by_auth_index(client: Client, auth_dir: Path) -> None:
    """TestHostAuthGetCallbackReturnsPhysicalJSONByAuthIndex: the file's JSON as on disk."""
    path = write(auth_dir, "demo-b.json", '{"type":"demo","email":"b@example.com","api_key":"k2"}')
    index = index_of("demo", path)
    result = await call_raw(client, "host.auth.get", b'{"auth_index":"%s"}' % index.encode())
    assert (result["auth_index"], result["name"]) == (index, "demo-b.json")
    assert result["json"]["email"] == "b@example.com" and result["json"]["api_key"] == "k2"


async def test_host_auth_get_runtime_callback_returns_runtime_info(client: Client, auth_dir: Path) -> None:
    """TestHostAuthGetRuntimeCallbackReturnsRuntimeInfo: the entry of that auth index."""
    path = write(auth_dir, "demo-runtime.json", '{"type":"demo","email":"runtime@example.com","api_key":"k"}')
    index = index_of("demo", path)
    result = await call(client, "host.auth.get_runtime", {"auth_index": index})
    assert result["auth"]["auth_index"] == index and result["auth"]["email"] == "runtime@example.com"


@pytest.mark.parametrize("raw_weight", [b"1.5", b"1000001", b"9223372036854775808", b'"invalid"'])
async def test_host_auth_save_callback_rejects_invalid_weight_before_persistence(
    client: Client, auth_dir: Path, raw_weight: bytes
) -> None:
    """TestHostAuthSaveCallbackRejectsInvalidWeightBeforePersistence."""
    with pytest.raises(RpcError) as e:
        await call_raw(
            client, "host.auth.save", b'{"name":"invalid.json","json":{"type":"demo","weight":' + raw_weight + b"}}"
        )
    assert e.value.message.startswith("invalid auth weight: ")
    assert not (auth_dir / "invalid.json").exists()
    assert await files(client) == []


async def test_host_auth_save_callback_writes_physical_file(client: Client, auth_dir: Path) -> None:
    """TestHostAuthSaveCallbackWritesPhysicalFile: the file holds the JSON byte for byte."""
    text = b'{"type":"demo","email":"saved@example.com","api_key":"saved-key"}'
    result = await call_raw(client, "host.auth.save", b'{"name":"saved.json","json":' + text + b"}")
    assert result["name"] == "saved.json"
    assert Path(result["path"]).read_bytes() == text
    assert [f["name"] for f in await files(client)] == ["saved.json"]


async def test_host_auth_save_on_first_write_keeps_plugin_bytes(client: Client, auth_dir: Path) -> None:
    """TestHostAuthSaveOnFirstWriteKeepsPluginBytes: no routing keys are invented."""
    payload = b'{"type":"demo","email":"saved@example.com","api_key":"saved-key"}'
    await call_raw(client, "host.auth.save", b'{"name":"saved.json","json":' + payload + b"}")
    saved = json.loads((auth_dir / "saved.json").read_bytes())
    assert "priority" not in saved and saved["api_key"] == "saved-key"
    [entry] = await files(client)
    assert "priority" not in entry


async def test_host_auth_list_callback_uses_auth_manager(client: Client, auth_dir: Path) -> None:
    """TestHostAuthListCallbackUsesAuthManager, for the credential as the manager loads it
    from disk: one entry with the auth index, the file name and the email."""
    path = write(auth_dir, "demo-a.json", '{"type":"demo","email":"a@example.com","api_key":"k1"}')
    [entry] = (await call(client, "host.auth.list", None))["files"]
    expected = (index_of("demo", path), "demo-a.json", "a@example.com")
    assert (entry["auth_index"], entry["name"], entry["email"]) == expected
    assert "api_key" not in entry
