"""``hostd config check`` (PROTOCOL §12): every problem at once with its key path, exit 2; or
the effective configuration with secrets masked, exit 0; and serve refuses the same files."""

from __future__ import annotations

import asyncio
import os
import tomllib
from pathlib import Path

import pytest

from tests.support.hostd_proc import HOSTD

pytestmark = pytest.mark.anyio

T = 20.0


async def hostd(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HOSTD_") or k == "HOSTD_LOOP"}
    proc = await asyncio.create_subprocess_exec(
        *HOSTD, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**base, **(env or {})},
    )  # fmt: skip
    async with asyncio.timeout(T):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


THREE_MISTAKES = """\
log_levl = "debug"
[limits]
max_in_flight = 0
[model]
base_url = "not a url"
"""


async def test_a_file_with_three_mistakes_lists_all_three(tmp_path: Path) -> None:
    config = tmp_path / "hostd.toml"
    config.write_text(THREE_MISTAKES)
    code, out, err = await hostd("config", "check", "--config", str(config))
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"hostd config check: 3 problems ({config}, environment, flags):"
    assert sorted(line.strip().split(":")[0] for line in lines[1:]) == [
        "$.limits.max_in_flight",
        "$.log_levl",
        "$.model.base_url",
    ]
    assert "did you mean log_level?" in err
    assert f"(from file {config})" in err


async def test_serve_refuses_the_same_file_with_the_same_problems(tmp_path: Path) -> None:
    config = tmp_path / "hostd.toml"
    config.write_text(THREE_MISTAKES)
    code, _, err = await hostd("serve", "--config", str(config))
    assert code == 2
    assert "invalid config: 3 problems:" in err
    assert "$.model.base_url: 'not a url' is not an absolute URL" in err
    assert err.count("$.log_levl") == 1  # printed once


async def test_flags_and_environment_are_checked_with_their_source(tmp_path: Path) -> None:
    code, _, err = await hostd("config", "check", "--max-streams", "0", env={"HOSTD_LOG_LEVEL": "loud"})
    assert code == 2
    assert "$.limits.max_streams: expected `int` >= 1 (got 0) (from --max-streams)" in err
    assert "$.log_level: must be one of trace, debug, info, warn, error (got 'loud') (from $HOSTD_LOG_LEVEL)" in err


async def test_a_valid_config_is_printed_as_toml_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "hostd.toml"
    config.write_text(
        '[http]\nproxy = "http://user:proxy-pw@127.0.0.1:3128"\n'
        '[log]\nlevels = {"hostd.upstream" = "DEBUG", "plugin:p1" = "trace"}\n'
    )
    env = {"HOSTD_MODEL_API_KEY": "sk-very-secret", "HOSTD_LOG_LEVEL": "WARN"}
    code, out, err = await hostd("config", "check", "--config", str(config), "--max-in-flight", "9", env=env)
    assert code == 0, err
    assert "sk-very-secret" not in out and "proxy-pw" not in out
    effective = tomllib.loads(out)
    assert effective["log_level"] == "warn"
    assert effective["limits"]["max_in_flight"] == 9
    assert effective["model"]["api_key"] == "********"
    assert effective["http"]["proxy"] == "http://user:********@127.0.0.1:3128"
    assert effective["log"]["levels"] == {"hostd.upstream": "debug", "plugin:p1": "trace"}
    assert out.startswith(f"# hostd config check: OK ({config}")


async def test_hostd_config_is_the_file_when_no_flag_names_one(tmp_path: Path) -> None:
    config = tmp_path / "hostd.toml"
    config.write_text("[limits]\nmax_batch = 0\n")
    code, _, err = await hostd("config", "check", env={"HOSTD_CONFIG": str(config)})
    assert code == 2
    assert "$.limits.max_batch" in err


async def test_warn_in_capitals_starts_hostd() -> None:
    code, out, err = await hostd("config", "check", env={"HOSTD_LOG_LEVEL": "WARN"})
    assert code == 0, err
    assert tomllib.loads(out)["log_level"] == "warn"


async def test_a_socks_proxy_is_refused_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "hostd.toml"
    config.write_text('[http]\nproxy = "socks5h://127.0.0.1:1080"\n')
    code, _, err = await hostd("config", "check", "--config", str(config))
    assert code == 2
    assert "$.http.proxy: socks5h:// proxies are not supported" in err
