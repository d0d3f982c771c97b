"""Where a configuration comes from and how it is built: the TOML file, then ``HOSTD_*``
environment variables, then flags, merged into one plain dict and checked key by key.

:class:`ConfigSources` keeps the sources of the start so that ``SIGHUP`` rebuilds the
configuration from exactly the same ones. This module never logs, never touches sockets,
and never reports only the first problem: the check lists every one, each with its key path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hostd.config_schema import DEFAULT_API_KEY_ENV, Config, ConfigError, Problem
from hostd.config_validate import build_config

ENV_KEYS = {"HOSTD_LOG_LEVEL": "log_level", "HOSTD_LOOP": "loop"}


class ConfigSources:
    """Where a configuration comes from; :meth:`load` builds it, at start and on every reload.

    ``path`` is the ``--config`` file (None: ``$HOSTD_CONFIG``, or no file); ``overrides``
    maps dotted keys (``limits.max_in_flight``) to flag values; ``environ`` is read at each
    load (None: the process environment). An environment variable overrides the file only
    when it is set and non-empty; flags override both. ``flag_names`` maps a dotted key to
    its ``--flag``, for messages. (A plain class: a frozen dataclass or a NamedTuple compiles
    code at every start, ~1 ms.)
    """

    __slots__ = ("environ", "flag_names", "overrides", "path")

    def __init__(
        self,
        path: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        flag_names: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.overrides: Mapping[str, Any] = overrides or {}
        self.environ = environ
        self.flag_names: Mapping[str, str] = flag_names or {}

    def __repr__(self) -> str:
        return f"ConfigSources(path={self.path!r}, overrides={sorted(self.overrides)!r})"  # keys: values may be secrets

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
        config = build_config(tree, origins, problems)
        return (config if not problems else None), problems

    def _merge(self) -> tuple[dict[str, Any], dict[str, str], list[Problem]]:
        env = self.env
        tree: dict[str, Any] = {}
        origins: dict[str, str] = {}
        problems: list[Problem] = []
        path = self.config_file
        if path:
            import tomllib  # lazy: only a start with a config file pays for it

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
