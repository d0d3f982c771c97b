"""``hostd config check``: validate the effective configuration as ``serve`` builds it.

Every problem is printed (stderr) with its key path and the source that set it, and the exit
code is 2; a valid configuration is printed (stdout) as TOML with its secrets masked, exit 0.
``serve`` runs the very same checks (:meth:`hostd.config.ConfigSources.load`), so a file
this accepts is a file the daemon accepts, at start and on reload.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import msgspec
import orjson

from hostd.config import Config, ConfigSources, mask_url_password

MASK = "********"


def check(sources: ConfigSources, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    config, problems = sources.check()
    origin = sources.config_file or "no config file"
    if config is None:
        noun = "problem" if len(problems) == 1 else "problems"
        err.write(f"hostd config check: {len(problems)} {noun} ({origin}, environment, flags):\n")
        for problem in problems:
            err.write(f"  {problem}\n")
        return 2
    out.write(f"# hostd config check: OK ({origin}, environment, flags); secrets masked\n")
    out.write(to_toml(masked(config)))
    return 0


def masked(config: Config) -> dict[str, Any]:
    """The configuration as plain data, with ``model.api_key`` and proxy passwords masked."""
    tree: dict[str, Any] = msgspec.to_builtins(config)
    if tree["model"].get("api_key"):
        tree["model"]["api_key"] = MASK
    if tree["http"].get("proxy"):
        tree["http"]["proxy"] = mask_url_password(tree["http"]["proxy"], MASK)
    return tree


def to_toml(tree: dict[str, Any]) -> str:
    """A TOML document for a tree of tables, scalars, lists and inline tables (no dependency)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in tree.items():
        if isinstance(value, dict) and key in _TABLES:
            tables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{_key(name)}]")
        lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


_TABLES = frozenset(f.name for f in msgspec.structs.fields(Config) if isinstance(f.default, msgspec.Struct))


def _key(key: str) -> str:
    if key and all(c.isalnum() or c in "_-" for c in key) and key.isascii():
        return key
    return _string(key)


def _string(text: str) -> str:
    # A JSON string is a valid TOML basic string for everything but non-BMP escapes, which
    # orjson never writes (it writes UTF-8).
    return orjson.dumps(text).decode()


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    return _string(str(value))
