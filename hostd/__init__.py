"""hostd: CLIProxyAPI's ``host.*`` plugin API for out-of-process plugins, over JSON-RPC 2.0."""

__version__ = "0.1.0"
SCHEMA_VERSION = 3
