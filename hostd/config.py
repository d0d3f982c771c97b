"""hostd's configuration: a TOML file, then ``HOSTD_*`` environment variables, then flags.

:class:`ConfigSources` holds where a configuration comes from (the ``--config`` path, the
environment, the flag overrides) so that ``SIGHUP`` rebuilds it from exactly the sources of
the start. Everything is merged into one plain dict, checked key by key (every problem is
reported, each with its key path, not only the first), and converted once into frozen
structs. :func:`reload_plan` says which changed keys a running daemon can apply and which
need a restart. This module never logs and never touches sockets.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple, get_args, get_origin
from urllib.parse import urlsplit

import msgspec

MiB = 1024 * 1024

Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
LevelName = Literal["trace", "debug", "info", "warn", "error"]

LEVEL_CHOICES: tuple[str, ...] = get_args(LevelName)
_LEVEL_ALIASES = {"warning": "warn"}


class LimitsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_line_bytes: Positive = 16 * MiB
    max_in_flight: Positive = 256
    max_streams: Positive = 1024
    stream_idle_timeout_s: Seconds = 300.0
    stream_buffer_pieces: Positive = 4
    max_batch: Positive = 1024
    max_sessions: Positive = 1024
    max_output_bytes: Positive = 768 * MiB
    max_answer_bytes: Positive = 128 * MiB
    max_total_input_bytes: Positive = 1024 * MiB
    max_total_output_bytes: Positive = 2048 * MiB


class HttpConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    timeout_s: Seconds = 300.0
    connect_timeout_s: Seconds = 30.0
    max_body_bytes: Positive = 64 * MiB
    max_total_body_bytes: Positive = 512 * MiB
    proxy: str = ""
    deny_private: bool = False
    ca_file: str = ""  # extra CA bundle (PEM) to trust instead of the default one
    # Egress refinements (exact names, "*.suffix", CIDRs): deny wins; a non-empty allow list refuses the rest.
    allow_hosts: list[str] = []
    deny_hosts: list[str] = []


DEFAULT_API_KEY_ENV = "HOSTD_MODEL_API_KEY"


class ModelConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    base_url: str = "http://127.0.0.1:8317"
    api_key: str = ""
    api_key_env: str = DEFAULT_API_KEY_ENV
    timeout_s: Seconds = 300.0


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    dir: str = "~/.cli-proxy-api"
    max_file_bytes: Positive = 1 * MiB


class LogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: Literal["auto", "json", "text"] = "auto"  # auto: text when stderr is a terminal
    # Per-logger levels: "hostd.upstream" (a logger and its children), "plugin:<id>" (one
    # plugin's host.log lines), "plugin" (every plugin). Unlisted names use log_level.
    levels: dict[str, LevelName] = {}
    max_line_bytes: Positive = 64 * 1024
    max_queue_bytes: Positive = 8 * MiB
    plugin_lines_per_s: Positive = 1000
    plugin_burst: Positive = 2000


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    listen: str = "stdio"
    control: str = ""
    socket_mode: str = "0600"
    allowed_uids: list[int] = []
    log_level: LevelName = "info"
    loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    name: str = ""
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    limits: LimitsConfig = LimitsConfig()
    http: HttpConfig = HttpConfig()
    model: ModelConfig = ModelConfig()
    auth: AuthConfig = AuthConfig()
    log: LogConfig = LogConfig()

    @property
    def socket_mode_bits(self) -> int:
        return int(self.socket_mode, 8)

    @property
    def auth_dir(self) -> str:
        """The auth directory made absolute lexically (as the proxy does), or '' when off."""
        if not self.auth.dir:
            return ""
        return os.path.abspath(os.path.expanduser(self.auth.dir))

    @property
    def model_api_key(self) -> str:
        """The proxy key: ``model.api_key``, which :class:`ConfigSources` fills from
        ``$<model.api_key_env>`` when the file leaves it empty."""
        return self.model.api_key


class Problem(NamedTuple):
    """One thing wrong with a configuration: where (``$.limits.max_in_flight``), what, and
    which source set it (``file /etc/hostd/hostd.toml``, ``$HOSTD_LOG_LEVEL``, ``--flag``)."""

    path: str
    message: str
    origin: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" (from {self.origin})" if self.origin else "")


class ConfigError(Exception):
    """A configuration that hostd refuses to start with (exit code 2). ``problems`` lists
    every problem found, each with its key path; the message names them all."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)

    @classmethod
    def from_problems(cls, problems: Sequence[Problem]) -> ConfigError:
        if len(problems) == 1:
            return cls(f"invalid config: {problems[0]}", problems)
        lines = "".join(f"\n  {p}" for p in problems)
        return cls(f"invalid config: {len(problems)} problems:{lines}", problems)


# Sources ---------------------------------------------------------------------------------

ENV_KEYS = {"HOSTD_LOG_LEVEL": "log_level", "HOSTD_LOOP": "loop"}


def normalize_level(value: str) -> str | None:
    """``WARN``, `` Warning `` → ``warn``; None for a name that is not a level."""
    name = value.strip().lower()
    name = _LEVEL_ALIASES.get(name, name)
    return name if name in LEVEL_CHOICES else None


@dataclass(frozen=True)
class ConfigSources:
    """Where a configuration comes from; :meth:`load` builds it, at start and on every reload.

    ``path`` is the ``--config`` file (None: ``$HOSTD_CONFIG``, or no file); ``overrides``
    maps dotted keys (``limits.max_in_flight``) to flag values; ``environ`` is read at each
    load (None: the process environment). An environment variable overrides the file only
    when it is set and non-empty; flags override both.
    """

    path: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] | None = None
    flag_names: Mapping[str, str] = field(default_factory=dict)  # dotted key -> "--flag", for messages

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    @property
    def config_file(self) -> str | None:
        """The file this configuration is read from, or None."""
        return self.path or self.env.get("HOSTD_CONFIG") or None

    def load(self) -> Config:
        """The effective configuration, or :class:`ConfigError` listing every problem."""
        config, problems = self.check()
        if config is None:
            raise ConfigError.from_problems(problems)
        return config

    def check(self) -> tuple[Config | None, list[Problem]]:
        """(config, []) when valid, else (None, every problem found)."""
        tree, origins, problems = self._merge()
        if problems:
            return None, problems
        config = _build(tree, origins, problems)
        return (config if not problems else None), problems

    def _merge(self) -> tuple[dict[str, Any], dict[str, str], list[Problem]]:
        env = self.env
        tree: dict[str, Any] = {}
        origins: dict[str, str] = {}
        problems: list[Problem] = []
        path = self.config_file
        if path:
            origin = f"file {path}"
            try:
                with open(path, "rb") as f:
                    tree = tomllib.load(f)
            except OSError as e:
                problems.append(Problem("$", f"cannot read config file {path}: {e.strerror}"))
            except tomllib.TOMLDecodeError as e:
                problems.append(Problem("$", f"config file {path} is not valid TOML: {e}"))
            else:
                for key in _leaf_keys(tree):
                    origins[key] = origin
        for var, key in ENV_KEYS.items():
            if env.get(var):
                _set(tree, key, env[var], f"${var}", origins, problems)
        for key, value in self.overrides.items():
            _set(tree, key, value, self.flag_names.get(key, "the command line"), origins, problems)
        model = tree.get("model")
        if not problems and (model is None or isinstance(model, dict)):
            model = model or {}
            key_env = model.get("api_key_env", DEFAULT_API_KEY_ENV)
            if not model.get("api_key") and isinstance(key_env, str) and key_env and env.get(key_env):
                model["api_key"] = env[key_env]
                tree["model"] = model
                origins["model.api_key"] = f"${key_env}"
        return tree, origins, problems


def load_config(
    path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the config: file (``path`` or ``$HOSTD_CONFIG``), env, then dotted ``overrides``."""
    return ConfigSources(path, dict(overrides or {}), environ).load()


def _set(
    tree: dict[str, Any], dotted: str, value: Any, origin: str, origins: dict[str, str], problems: list[Problem]
) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for depth, key in enumerate(parents):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            where = ".".join(parents[: depth + 1])
            problems.append(Problem(f"$.{where}", "expected a table", origins.get(where, "")))
            return
        node = child
    node[leaf] = value
    origins[dotted] = origin


def _leaf_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        out.append(dotted)
        if isinstance(value, dict):
            out += _leaf_keys(value, dotted + ".")
    return out


# Checking ----------------------------------------------------------------------------------

_PLUGIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LOGGER_NAME = re.compile(r"^hostd(\.[A-Za-z0-9_-]+)*$")
_MSGSPEC_AT = re.compile(r" - at `\$(.*)`$")
_SECRET_PATHS = frozenset({"model.api_key"})


def _build(tree: dict[str, Any], origins: dict[str, str], problems: list[Problem]) -> Config | None:
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


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _check_table(
    tree: Mapping[str, Any], cls: type[msgspec.Struct], prefix: str, origins: dict[str, str], problems: list[Problem]
) -> None:
    fields = _struct_fields(cls)
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        origin = origins.get(dotted, "")
        if key not in fields:
            guess = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {prefix}{guess[0]}?" if guess else ""
            where = f"[{prefix[:-1]}]" if prefix else "the top level"
            problems.append(Problem(f"$.{dotted}", f"unknown key in {where}{hint}", origin))
            continue
        tp = fields[key]
        if _is_struct(tp):
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
    m = _MSGSPEC_AT.search(message)
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
            if name == "plugin" or (name.startswith("plugin:") and _PLUGIN_ID.match(name[7:])):
                continue
            if not _LOGGER_NAME.match(name):
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


# Reload ----------------------------------------------------------------------------------

# Keys a running daemon applies on SIGHUP (prefixes end in "."); every other changed key is
# reported as needing a restart. docs/operations.md's config reference mirrors this table.
LIVE_KEYS: tuple[str, ...] = (
    "log_level",
    "log.",
    "limits.",
    "allowed_uids",
    "shutdown_grace_s",
    "http.",  # a changed [http] replaces the HTTP client: new calls use the new one
    "model.",
    "auth.",
)


def applies_live(key: str) -> bool:
    return any(key.startswith(p) if p.endswith(".") else key == p for p in LIVE_KEYS)


@dataclass(frozen=True)
class ReloadPlan:
    """What changed between two configurations: ``live`` keys the daemon applies now,
    ``restart`` keys that keep their old value until the next start."""

    live: tuple[str, ...]
    restart: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart)

    def log_fields(self) -> dict[str, Any]:
        """Fields for the reload's log line (key names only: values may be secrets)."""
        return {"applied": list(self.live), "needs_restart": list(self.restart)}


def reload_plan(old: Config, new: Config) -> ReloadPlan:
    """Which keys differ between ``old`` and ``new``, split into live and restart ones."""
    changed = _diff(old, new, "")
    live = tuple(k for k in changed if applies_live(k))
    restart = tuple(k for k in changed if not applies_live(k))
    return ReloadPlan(live, restart)


def _diff(old: msgspec.Struct, new: msgspec.Struct, prefix: str) -> list[str]:
    out = []
    for f in msgspec.structs.fields(type(old)):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if _is_struct(f.type):
            out += _diff(a, b, f"{prefix}{f.name}.")
        elif a != b:
            out.append(prefix + f.name)
    return out
