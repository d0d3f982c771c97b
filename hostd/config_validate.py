"""The checks a merged configuration tree must pass before it becomes a :class:`Config`:
types key by key (unknown keys with a did-you-mean, enum choices), then values (socket mode,
URLs, host patterns, logger names), every problem reported with its ``$.key.path``.

Also the URL helpers the checks share with ``hostd config check`` (:func:`mask_url_password`).
This module never reads files or the environment, never logs, and never shows the value of
a secret key in a problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import msgspec

from hostd.config_schema import Config, Problem, normalize_level

# Patterns, not compiled ones: only log.levels entries and errors use them, and re caches
# what it compiles (each compiled at import cost every start ~0.15 ms).
_PLUGIN_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_LOGGER_NAME = r"^hostd(\.[A-Za-z0-9_-]+)*$"
_MSGSPEC_AT = r" - at `\$(.*)`$"
_SECRET_PATHS = frozenset({"model.api_key"})


def build_config(tree: dict[str, Any], origins: dict[str, str], problems: list[Problem]) -> Config | None:
    """The :class:`Config` of a merged tree, or None with every problem appended."""
    _normalize(tree)
    _check_table(tree, Config, "", origins, problems)
    _check_values(tree, origins, problems)
    if problems:
        return None
    try:
        return msgspec.convert(tree, Config, str_keys=True)
    except msgspec.ValidationError as e:  # not expected after the key-by-key check
        problems.append(Problem("$", str(e)))
        return None


def _normalize(tree: dict[str, Any]) -> None:
    """Levels are case-insensitive and ``warning`` is ``warn``, as in ``host.log``."""
    level = tree.get("log_level")
    if isinstance(level, str) and normalize_level(level):
        tree["log_level"] = normalize_level(level)
    log = tree.get("log")
    if isinstance(log, dict):
        if isinstance(log.get("format"), str):
            log["format"] = log["format"].strip().lower()
        levels = log.get("levels")
        if isinstance(levels, dict):
            for name, value in levels.items():
                if isinstance(value, str) and normalize_level(value):
                    levels[name] = normalize_level(value)


def _struct_fields(cls: type[msgspec.Struct]) -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(cls)}


def is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _check_table(
    tree: Mapping[str, Any], cls: type[msgspec.Struct], prefix: str, origins: dict[str, str], problems: list[Problem]
) -> None:
    fields = _struct_fields(cls)
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        origin = origins.get(dotted, "")
        if key not in fields:
            import difflib  # lazy: only an unknown key pays for it

            guess = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {prefix}{guess[0]}?" if guess else ""
            where = f"[{prefix[:-1]}]" if prefix else "the top level"
            problems.append(Problem(f"$.{dotted}", f"unknown key in {where}{hint}", origin))
            continue
        tp = fields[key]
        if is_struct(tp):
            if isinstance(value, dict):
                _check_table(value, tp, dotted + ".", origins, problems)
            else:
                problems.append(Problem(f"$.{dotted}", f"expected a table [{dotted}]", origin))
            continue
        if get_origin(tp) is dict and isinstance(value, dict):
            for name, item in value.items():  # each entry on its own: all problems, named by key
                try:
                    msgspec.convert(item, get_args(tp)[1], str_keys=True)
                except msgspec.ValidationError as e:
                    problems.append(_type_problem(f"{dotted}[{_quote(name)}]", get_args(tp)[1], item, e, origin))
            continue
        try:
            msgspec.convert(value, tp, str_keys=True)
        except msgspec.ValidationError as e:
            problems.append(_type_problem(dotted, tp, value, e, origin))


def _type_problem(dotted: str, tp: Any, value: Any, error: msgspec.ValidationError, origin: str) -> Problem:
    message = str(error)
    sub = ""
    m = re.search(_MSGSPEC_AT, message)
    if m:
        sub, message = m.group(1), message[: m.start()]
    choices = _literal_choices(tp) if not sub else None
    if choices is not None:
        message = "must be one of " + ", ".join(choices)
    else:
        message = message[0].lower() + message[1:] if message else "invalid value"
    shown = ""
    if dotted not in _SECRET_PATHS and ", got" not in message:
        shown = f" (got {_short(value if not sub else _at(value, sub))})"
    return Problem(f"$.{dotted}{sub}", message + shown, origin)


def _literal_choices(tp: Any) -> tuple[str, ...] | None:
    if get_origin(tp) is Literal:
        return tuple(str(a) for a in get_args(tp))
    return None


def _at(value: Any, sub: str) -> Any:
    """The part of ``value`` that msgspec's ``$[1]`` / ``$.key`` path names."""
    for index, key in re.findall(r"\[(\d+)\]|\.([^.\[]+)", sub):
        try:
            value = value[int(index)] if index else value[key]
        except (KeyError, IndexError, TypeError, ValueError):
            return value
    return value


def _quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_values(tree: Mapping[str, Any], origins: dict[str, str], problems: list[Problem]) -> None:
    """Checks beyond types, on the merged tree (values of the wrong type were reported already)."""

    def get(dotted: str) -> Any:
        node: Any = tree
        for key in dotted.split("."):
            if not isinstance(node, Mapping):
                return None
            node = node.get(key)
        return node

    def bad(path: str, message: str, origin_key: str | None = None) -> None:
        problems.append(Problem(f"$.{path}", message, origins.get(origin_key or path, "")))

    mode = get("socket_mode")
    if isinstance(mode, str):
        try:
            bits = int(mode, 8)
        except ValueError:
            bad("socket_mode", f"{mode!r} is not an octal mode such as 0660")
        else:
            if bits & ~0o777 or bits < 0:
                bad("socket_mode", f"{mode!r} is not a file mode (at most 0777)")
    base_url = get("model.base_url")
    if isinstance(base_url, str) and base_url:
        reason = url_problem(base_url, ("http", "https"), allow_path=True)
        if reason:
            bad("model.base_url", f'{reason}; expected http(s)://host[:port] ("" turns host.model.* off)')
    proxy = get("http.proxy")
    if isinstance(proxy, str) and proxy:
        reason = url_problem(proxy, ("http", "https"), allow_path=False)
        if reason:
            bad("http.proxy", f"{reason}; expected http(s)://[user:password@]host[:port]")
    for key in ("http.allow_hosts", "http.deny_hosts"):
        patterns = get(key)
        for i, pattern in enumerate(patterns if isinstance(patterns, list) else []):
            reason = host_pattern_problem(pattern) if isinstance(pattern, str) else None
            if reason:
                bad(f"{key}[{i}]", f"{pattern!r}: {reason}; expected a host name, *.suffix or a CIDR", key)
    levels = get("log.levels")
    if isinstance(levels, Mapping):
        for name in levels:
            if name == "plugin" or (name.startswith("plugin:") and re.match(_PLUGIN_ID, name[7:])):
                continue
            if not re.match(_LOGGER_NAME, name):
                bad(
                    f"log.levels[{_quote(name)}]",
                    'not a logger name: use "hostd", "hostd.<part>" (e.g. "hostd.upstream"), '
                    '"plugin" or "plugin:<plugin id>"',
                    "log.levels",
                )


def host_pattern_problem(text: str) -> str | None:
    """Why ``text`` is not an ``[http] allow_hosts``/``deny_hosts`` entry, or None when it is."""
    import ipaddress

    pattern = text.strip()
    if not pattern:
        return "empty pattern"
    if "*" in pattern and (not pattern.startswith("*.") or "*" in pattern[2:] or len(pattern) < 3):
        return "a wildcard is only allowed as a leading '*.'"
    if "/" in pattern:
        try:
            ipaddress.ip_network(pattern, strict=False)
        except ValueError as e:
            return f"not a CIDR ({e})"
    return None


def url_problem(url: str, schemes: Sequence[str], *, allow_path: bool) -> str | None:
    """Why ``url`` is not an absolute ``scheme://host[:port]`` URL, or None when it is."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        return f"{url!r} is not a valid URL ({e})"
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        return f"{scheme}:// proxies are not supported (hostd's HTTP client speaks HTTP CONNECT only)"
    if not scheme or not parts.netloc:
        return f"{_redact_url(url)!r} is not an absolute URL"
    if scheme not in schemes:
        return f"scheme {scheme}:// is not supported (only " + ", ".join(f"{s}://" for s in schemes) + ")"
    if not parts.hostname:
        return f"{_redact_url(url)!r} has no host"
    if port == 0:
        return f"{_redact_url(url)!r} has port 0"
    if parts.query or parts.fragment:
        return f"{_redact_url(url)!r} must not have a query or fragment"
    if not allow_path and parts.path not in ("", "/"):
        return f"{_redact_url(url)!r} must not have a path"
    return None


def _redact_url(url: str) -> str:
    return mask_url_password(url)


def mask_url_password(url: str, mask: str = "****") -> str:
    """``http://user:secret@host`` → ``http://user:****@host`` (anything else unchanged)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{mask}@{hostport}").geturl()
