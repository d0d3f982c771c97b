"""hostd.config: sources (file, environment, flags), every problem reported with its key path,
levels and URLs as PROTOCOL §12 asks, and which changed keys a reload applies live."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from hostd.config import (
    Config,
    ConfigError,
    ConfigSources,
    applies_live,
    load_config,
    mask_url_password,
    reload_plan,
    url_problem,
)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hostd.toml"
    path.write_text(text)
    return str(path)


def problems(sources: ConfigSources) -> list[str]:
    with pytest.raises(ConfigError) as e:
        sources.load()
    return [str(p) for p in e.value.problems]


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, 'log_level = "debug"\n[limits]\nmax_in_flight = 7\nmax_streams = 9\n')
    sources = ConfigSources(path, {"limits.max_streams": 3}, {"HOSTD_LOG_LEVEL": "error"})
    config = sources.load()
    assert config.log_level == "error"
    assert config.limits.max_in_flight == 7
    assert config.limits.max_streams == 3


def test_an_empty_environment_variable_does_not_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'log_level = "debug"\n')
    assert ConfigSources(path, {}, {"HOSTD_LOG_LEVEL": ""}).load().log_level == "debug"


def test_hostd_config_names_the_file_when_no_path_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_batch = 5\n")
    sources = ConfigSources(None, {}, {"HOSTD_CONFIG": path})
    assert sources.config_file == path
    assert sources.load().limits.max_batch == 5
    assert ConfigSources(None, {}, {}).config_file is None


def test_each_load_reads_the_file_again(tmp_path: Path) -> None:
    path = write(tmp_path, 'log_level = "debug"\n')
    sources = ConfigSources(path, {"limits.max_streams": 3}, {})
    assert sources.load().log_level == "debug"
    write(tmp_path, 'log_level = "warn"\n')
    again = sources.load()
    assert again.log_level == "warn"
    assert again.limits.max_streams == 3  # the flags still apply


@pytest.mark.parametrize("given", ["WARN", "warn", " Warning ", "WARNING"])
def test_levels_are_case_insensitive_and_warning_is_warn(given: str) -> None:
    assert ConfigSources(None, {}, {"HOSTD_LOG_LEVEL": given}).load().log_level == "warn"


def test_per_logger_levels_are_normalised(tmp_path: Path) -> None:
    path = write(tmp_path, '[log]\nformat = "TEXT"\nlevels = {"hostd.upstream" = "DEBUG", "plugin:p1" = "Trace"}\n')
    log = load_config(path, environ={}).log
    assert log.format == "text"
    assert log.levels == {"hostd.upstream": "debug", "plugin:p1": "trace"}


def test_every_problem_is_reported_with_its_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'log_levl = "info"\n[limits]\nmax_in_flight = 0\nmax_stream = 3\n[model]\nbase_url = "not a url"\n',
    )
    found = problems(ConfigSources(path, {"loop": "fast"}, {}))
    assert len(found) == 5, found
    joined = "\n".join(found)
    assert "$.log_levl: unknown key in the top level; did you mean log_level?" in joined
    assert "$.limits.max_in_flight: expected `int` >= 1 (got 0)" in joined
    assert "$.limits.max_stream: unknown key in [limits]; did you mean limits.max_streams?" in joined
    assert "$.model.base_url: 'not a url' is not an absolute URL" in joined
    assert "$.loop: must be one of auto, asyncio, uvloop (got 'fast') (from the command line)" in joined
    assert f"(from file {path})" in joined


def test_the_error_message_names_all_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_in_flight = 0\nmax_streams = 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, environ={})
    assert str(e.value).startswith("invalid config: 2 problems:")
    assert "$.limits.max_in_flight" in str(e.value) and "$.limits.max_streams" in str(e.value)


def test_an_enum_problem_lists_the_allowed_values() -> None:
    [found] = problems(ConfigSources(None, {}, {"HOSTD_LOG_LEVEL": "loud"}))
    assert found == "$.log_level: must be one of trace, debug, info, warn, error (got 'loud') (from $HOSTD_LOG_LEVEL)"


def test_a_problem_in_a_per_logger_level_names_the_entry(tmp_path: Path) -> None:
    path = write(tmp_path, '[log]\nlevels = {"plugin:p1" = "loud", "not a name" = "info"}\n')
    found = problems(ConfigSources(path, {}, {}))
    assert any(p.startswith('$.log.levels["plugin:p1"]: must be one of trace,') for p in found), found
    assert any(p.startswith('$.log.levels["not a name"]: not a logger name') for p in found), found


def test_a_table_given_as_a_value_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'limits = 3\n[http]\nproxy = ""\n')
    [found] = problems(ConfigSources(path, {}, {}))
    assert found.startswith("$.limits: expected a table")


def test_invalid_toml_and_missing_files_are_problems(tmp_path: Path) -> None:
    [bad] = problems(ConfigSources(write(tmp_path, "limits = [\n"), {}, {}))
    assert "is not valid TOML" in bad
    [missing] = problems(ConfigSources(str(tmp_path / "nope.toml"), {}, {}))
    assert "cannot read config file" in missing


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://127.0.0.1:8317", True),
        ("https://proxy.internal", True),
        ("http://[::1]:8317/", True),
        ("not a url", False),
        ("127.0.0.1:8317", False),
        ("ftp://host", False),
        ("http://host:99999", False),
        ("http://", False),
        ("http://host/?q=1", False),
    ],
)
def test_model_base_url_must_be_http_host_port(url: str, ok: bool) -> None:
    sources = ConfigSources(None, {"model.base_url": url}, {})
    if ok:
        assert sources.load().model.base_url == url
    else:
        [found] = problems(sources)
        assert found.startswith("$.model.base_url: ")


def test_an_empty_base_url_turns_the_model_backend_off() -> None:
    assert ConfigSources(None, {"model.base_url": ""}, {}).load().model.base_url == ""


def test_socks_proxies_are_refused_with_the_reason() -> None:
    [found] = problems(ConfigSources(None, {"http.proxy": "socks5://user:pw@127.0.0.1:1080"}, {}))
    assert "socks5:// proxies are not supported" in found
    assert "pw" not in found


def test_http_proxy_urls_are_accepted_and_their_password_never_shown() -> None:
    assert url_problem("http://user:pw@127.0.0.1:3128", ("http", "https"), allow_path=False) is None
    [found] = problems(ConfigSources(None, {"http.proxy": "http://user:s3cret@host:3128/path"}, {}))
    assert "must not have a path" in found and "s3cret" not in found
    assert mask_url_password("http://user:s3cret@host:3128") == "http://user:****@host:3128"


def test_the_api_key_comes_from_its_environment_variable_when_the_file_has_none(tmp_path: Path) -> None:
    env = {"HOSTD_MODEL_API_KEY": "sk-env"}
    assert ConfigSources(None, {}, env).load().model_api_key == "sk-env"
    path = write(tmp_path, '[model]\napi_key = "sk-file"\n')
    assert ConfigSources(path, {}, env).load().model_api_key == "sk-file"
    path = write(tmp_path, '[model]\napi_key_env = "OTHER_KEY"\n')
    assert ConfigSources(path, {}, {"OTHER_KEY": "sk-other", **env}).load().model_api_key == "sk-other"


def test_an_invalid_api_key_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "[model]\napi_key = 12345678\n")
    [found] = problems(ConfigSources(path, {}, {}))
    assert found.startswith("$.model.api_key: ") and "12345678" not in found


def test_socket_mode_must_be_octal() -> None:
    [found] = problems(ConfigSources(None, {"socket_mode": "999"}, {}))
    assert found.startswith("$.socket_mode: '999' is not an octal mode")
    assert ConfigSources(None, {"socket_mode": "0660"}, {}).load().socket_mode_bits == 0o660


def test_reload_plan_splits_live_and_restart_keys() -> None:
    old = load_config(environ={})
    new = load_config(
        overrides={
            "log_level": "debug",
            "limits.max_in_flight": 3,
            "model.base_url": "http://127.0.0.1:9",
            "http.deny_private": True,
            "listen": "unix:/tmp/x.sock",
            "loop": "asyncio",
        },
        environ={},
    )
    plan = reload_plan(old, new)
    assert set(plan.live) == {"log_level", "limits.max_in_flight", "model.base_url", "http.deny_private"}
    assert set(plan.restart) == {"listen", "loop"}
    assert plan.changed
    assert plan.log_fields() == {"applied": list(plan.live), "needs_restart": list(plan.restart)}
    assert not reload_plan(old, load_config(environ={})).changed


def test_reload_plan_never_carries_values() -> None:
    old = load_config(environ={})
    new = load_config(overrides={"model.api_key": "sk-secret"}, environ={})
    plan = reload_plan(old, new)
    assert plan.live == ("model.api_key",)
    assert "sk-secret" not in repr(plan)


def _keys(cls: type[msgspec.Struct], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for f in msgspec.structs.fields(cls):
        if isinstance(f.default, msgspec.Struct):
            out += _keys(type(f.default), f"{prefix}{f.name}.")
        else:
            default = f.default_factory() if f.default is msgspec.NODEFAULT else f.default
            out.append((prefix + f.name, default))
    return out


def test_the_operations_reference_lists_every_key_with_its_default_and_reload() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    rows = {}
    for m in re.finditer(r"^\| `(?:\[(\w+)\] )?(\w+)` \| `([^`]*)` \| (live|restart) \|", doc, re.M):
        table, key, default, reload = m.groups()
        rows[f"{table}.{key}" if table else key] = (default, reload)
    expected = _keys(Config)
    assert sorted(rows) == sorted(k for k, _ in expected)
    for key, default in expected:
        assert rows[key][0] == orjson.dumps(default).decode(), key
        assert rows[key][1] == ("live" if applies_live(key) else "restart"), key
