"""hostd's configuration: a TOML file, then ``HOSTD_*`` environment variables, then flags.

Everything is merged into one plain dict and converted once into frozen structs, so a bad
value is rejected at start with the key that holds it (``$.limits.max_in_flight``).
"""

from __future__ import annotations

import os
import tomllib
from typing import Annotated, Any, Literal

import msgspec

MiB = 1024 * 1024

Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


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


class ModelConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    base_url: str = "http://127.0.0.1:8317"
    api_key: str = ""
    api_key_env: str = "HOSTD_MODEL_API_KEY"
    timeout_s: Seconds = 300.0


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    dir: str = "~/.cli-proxy-api"
    max_file_bytes: Positive = 1 * MiB


class LogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_line_bytes: Positive = 64 * 1024
    max_queue_bytes: Positive = 8 * MiB
    plugin_lines_per_s: Positive = 1000
    plugin_burst: Positive = 2000


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    listen: str = "stdio"
    control: str = ""
    socket_mode: str = "0600"
    allowed_uids: list[int] = []
    log_level: Literal["trace", "debug", "info", "warn", "warning", "error"] = "info"
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
        if self.model.api_key:
            return self.model.api_key
        return os.environ.get(self.model.api_key_env, "") if self.model.api_key_env else ""


class ConfigError(Exception):
    """A configuration that hostd refuses to start with (exit code 2)."""


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: expected a table")
        node = child
    node[leaf] = value


ENV_KEYS = {"HOSTD_LOG_LEVEL": "log_level"}


def load_config(
    path: str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the config: file (``path`` or ``$HOSTD_CONFIG``), env, then dotted ``overrides``."""
    env = os.environ if environ is None else environ
    path = path or env.get("HOSTD_CONFIG") or None
    tree: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                tree = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    for var, key in ENV_KEYS.items():
        if env.get(var):
            _set(tree, key, env[var])
    for key, value in (overrides or {}).items():
        _set(tree, key, value)
    try:
        config = msgspec.convert(tree, Config, str_keys=True)
    except msgspec.ValidationError as e:
        raise ConfigError(f"invalid config: {e}") from None
    try:
        mode = config.socket_mode_bits
    except ValueError:
        raise ConfigError(f"invalid config: socket_mode {config.socket_mode!r} is not octal") from None
    if mode & ~0o777:
        raise ConfigError(f"invalid config: socket_mode {config.socket_mode!r} is not a file mode")
    return config
