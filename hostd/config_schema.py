"""hostd's configuration as data: the frozen structs, their defaults and bounds, and the
error types that name a problem by its key path.

Every other config module builds or compares these structs; this one only declares them.
It must never read files or the environment, never log, and never import another hostd
module (everything about configuration depends on it, so it depends on nothing).

No ``from __future__ import annotations`` here: msgspec would evaluate every field's
annotation from its string (``typing`` forward references, compiled one by one) when it
first builds the Config decoder, ~1% of a start.
"""

import os
from collections.abc import Sequence
from typing import Annotated, Literal, NamedTuple, get_args

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
    max_total_request_bytes: Positive = 1024 * MiB


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
    def from_problems(cls, problems: Sequence[Problem]) -> "ConfigError":
        if len(problems) == 1:
            return cls(f"invalid config: {problems[0]}", problems)
        lines = "".join(f"\n  {p}" for p in problems)
        return cls(f"invalid config: {len(problems)} problems:{lines}", problems)


def normalize_level(value: str) -> str | None:
    """``WARN``, `` Warning `` → ``warn``; None for a name that is not a level."""
    name = value.strip().lower()
    name = _LEVEL_ALIASES.get(name, name)
    return name if name in LEVEL_CHOICES else None
