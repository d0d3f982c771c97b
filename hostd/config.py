"""hostd's configuration: a TOML file, then ``HOSTD_*`` environment variables, then flags.

This is the one place other modules import configuration names from; the work lives in
four modules, each with one job:

- :mod:`hostd.config_schema`: the frozen structs and their defaults, :class:`Problem`,
  :class:`ConfigError` (declarations only, no I/O);
- :mod:`hostd.config_sources`: :class:`ConfigSources` (the ``--config`` path, the
  environment, the flag overrides), so that ``SIGHUP`` rebuilds from exactly the sources of
  the start, and :func:`load_config`;
- :mod:`hostd.config_validate`: the key-by-key check of the merged tree (every problem is
  reported, each with its key path, not only the first) and the URL helpers;
- :mod:`hostd.config_reload`: :func:`reload_plan`, which changed keys a running daemon can
  apply and which need a restart.

This module only re-exports; it must never grow logic of its own. No config module logs or
touches sockets.
"""

from __future__ import annotations

from hostd.config_reload import LIVE_KEYS, ReloadPlan, applies_live, reload_plan
from hostd.config_schema import (
    DEFAULT_API_KEY_ENV,
    LEVEL_CHOICES,
    AuthConfig,
    Config,
    ConfigError,
    HttpConfig,
    LevelName,
    LimitsConfig,
    LogConfig,
    MiB,
    ModelConfig,
    Positive,
    Problem,
    Seconds,
    normalize_level,
)
from hostd.config_sources import ENV_KEYS, ConfigSources, load_config
from hostd.config_validate import host_pattern_problem, mask_url_password, url_problem

__all__ = [
    "DEFAULT_API_KEY_ENV",
    "ENV_KEYS",
    "LEVEL_CHOICES",
    "LIVE_KEYS",
    "AuthConfig",
    "Config",
    "ConfigError",
    "ConfigSources",
    "HttpConfig",
    "LevelName",
    "LimitsConfig",
    "LogConfig",
    "MiB",
    "ModelConfig",
    "Positive",
    "Problem",
    "ReloadPlan",
    "Seconds",
    "applies_live",
    "host_pattern_problem",
    "load_config",
    "mask_url_password",
    "normalize_level",
    "reload_plan",
    "url_problem",
]
