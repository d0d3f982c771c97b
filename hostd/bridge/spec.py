"""The ``hostd`` block of a bridged plugin's configuration (PROTOCOL.md §15).

CLIProxyAPI passes each plugin its whole block of ``config.yaml`` (``plugins.configs.<id>``,
re-marshalled by yaml.v3, with ``enabled`` and ``priority`` filled in) as ``config_yaml`` on
``plugin.register``/``plugin.reconfigure``; hostd-bridge.so forwards those bytes, still base64, in
``hostd.bridge.start``. This module reads the ``hostd`` key of that block into a frozen
:class:`BridgeSpec`, or raises :class:`BridgeConfigError` whose message starts ``hostd: ``.

It only parses and validates: it never starts anything, and its messages never quote the YAML
(the plugin's own settings in the same block may hold secrets).
"""

from __future__ import annotations

import binascii
import math
from dataclasses import dataclass

import yaml

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RELAY_FAMILIES",
    "BridgeConfigError",
    "BridgeSpec",
    "decode_config_yaml",
    "family_of",
    "parse_bridge_spec",
]

#: ``host.*`` families a bridge can relay to the proxy's own host table.
RELAY_FAMILIES: frozenset[str] = frozenset({"http", "model", "auth", "log", "routing", "affinity"})
DEFAULT_TIMEOUT_S = 600.0

_KEYS = ("command", "native", "args", "relay", "timeout_s")
# hostd bridge owns these: it runs exactly one plugin on its own session, named by the bridge.
_REFUSED_ARGS = ("--listen", "--control", "--name", "--native")


class BridgeConfigError(ValueError):
    """The ``hostd`` block is missing or wrong; ``str(err)`` is ``hostd: <reason>``.

    hostd answers ``hostd.bridge.start`` with -32000, ``data.code`` :attr:`code`, and this text.
    """

    code = "invalid_config"

    def __init__(self, reason: str) -> None:
        super().__init__(f"hostd: {reason}")


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeSpec:
    """What ``hostd bridge`` runs and relays; equal specs mean "nothing to restart"."""

    command: tuple[str, ...] | None
    """A JSON-RPC plugin's command line (argv), or None for a native plugin."""
    native: str | None
    """A native plugin's shared library (§14), or None for a command."""
    args: tuple[str, ...] = ()
    """Extra ``hostd run`` options, in order."""
    relay: frozenset[str] = RELAY_FAMILIES
    """The ``host.*`` families the proxy serves itself."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    """The longest a proxy call waits for the plugin."""

    def relays(self, method: str) -> bool:
        """True when ``method`` (a ``host.*`` name) goes to the proxy rather than to hostd."""
        family = family_of(method)
        return family is not None and family in self.relay


def family_of(method: str) -> str | None:
    """The relay family of a ``host.*`` method: ``host.http.do`` → ``http``, ``host.log`` → ``log``.

    ``host.stream.*`` and anything outside the families are None: never relayed.
    """
    if not method.startswith("host."):
        return None
    family = method[5:].split(".", 1)[0]
    return family if family in RELAY_FAMILIES else None


def decode_config_yaml(value: object) -> bytes:
    """``config_yaml`` as the bridge sends it (Go's base64 of the YAML bytes) → the YAML bytes."""
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise BridgeConfigError("config_yaml must be a base64 string")
    try:
        return binascii.a2b_base64(value.replace("\r", "").replace("\n", ""), strict_mode=True)
    except (binascii.Error, ValueError):
        raise BridgeConfigError("config_yaml is not valid base64") from None


def parse_bridge_spec(config_yaml: bytes | str) -> BridgeSpec:
    """Reads the ``hostd`` block of a plugin's configuration block."""
    try:
        doc = yaml.safe_load(config_yaml) if config_yaml else None
    except yaml.MarkedYAMLError as err:
        where = f" at line {err.problem_mark.line + 1}" if err.problem_mark is not None else ""
        raise BridgeConfigError(f"config_yaml is not valid YAML{where}: {err.problem or 'syntax error'}") from None
    except yaml.YAMLError:
        raise BridgeConfigError("config_yaml is not valid YAML") from None
    if not isinstance(doc, dict):
        raise BridgeConfigError("the plugin's configuration must be a mapping with a hostd block")
    if "hostd" not in doc:
        raise BridgeConfigError("the plugin's configuration has no hostd block (hostd: {command: [...]})")
    block = doc["hostd"]
    if not isinstance(block, dict):
        raise BridgeConfigError("hostd must be a mapping")
    for key in block:
        if key not in _KEYS:
            raise BridgeConfigError(f"unknown key hostd.{key} (known: {', '.join(_KEYS)})")

    command = _command(block.get("command"))
    native = _native(block.get("native"))
    if (command is None) == (native is None):
        raise BridgeConfigError("set exactly one of hostd.command and hostd.native")
    return BridgeSpec(
        command=command,
        native=native,
        args=_args(block.get("args")),
        relay=_relay(block["relay"]) if "relay" in block else RELAY_FAMILIES,
        timeout_s=_timeout(block.get("timeout_s")),
    )


def _strings(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise BridgeConfigError(f"hostd.{key} must be a list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise BridgeConfigError(f"hostd.{key}[{index}] must be a string")
    return tuple(value)


def _command(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    argv = _strings(value, "command")
    if not argv or not argv[0].strip():
        raise BridgeConfigError("hostd.command must name a program")
    return argv


def _native(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BridgeConfigError("hostd.native must be the path of a shared library")
    return value


def _args(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    args = _strings(value, "args")
    for arg in args:
        option = arg.split("=", 1)[0]
        if option in _REFUSED_ARGS:
            raise BridgeConfigError(f"hostd.args may not set {option} (hostd bridge sets it)")
        if arg == "--":
            raise BridgeConfigError("hostd.args may not contain --; set the plugin in hostd.command")
    return args


def _relay(value: object) -> frozenset[str]:
    families = _strings(value, "relay")
    unknown = sorted(set(families) - RELAY_FAMILIES)
    if unknown:
        known = ", ".join(sorted(RELAY_FAMILIES))
        raise BridgeConfigError(f"hostd.relay: unknown family {unknown[0]} (known: {known})")
    return frozenset(families)


def _timeout(value: object) -> float:
    if value is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BridgeConfigError("hostd.timeout_s must be a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise BridgeConfigError("hostd.timeout_s must be a positive number of seconds")
    return seconds
