"""The proxy bridge (PROTOCOL.md §15): hostd-bridge.so's C sources live beside this package.

``hostd/bridge/hostd_bridge.c`` (with ``json_scan.h``) is built by ``make bridge`` into
``build/hostd-bridge.so``, a native plugin the proxy loads; it starts ``hostd bridge`` and forwards
every call to it. Public here: :mod:`hostd.bridge.spec`, the ``hostd`` block of the plugin's
configuration as hostd reads it on ``hostd.bridge.start``.
"""

from hostd.bridge.spec import RELAY_FAMILIES, BridgeConfigError, BridgeSpec, decode_config_yaml, parse_bridge_spec

__all__ = ["RELAY_FAMILIES", "BridgeConfigError", "BridgeSpec", "decode_config_yaml", "parse_bridge_spec"]
