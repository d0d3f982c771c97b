"""A native plugin's id from its file name, as CLIProxyAPI's loader derives it (PROTOCOL §14).

``my-plugin-v1.2.0.so`` → ``my-plugin``; ``x-vnext.so`` → ``x-vnext`` (``next`` is not a version).
Pure functions: no I/O, no imports beyond ``re`` and ``os.path``.
"""

from __future__ import annotations

import os.path
import re

# Go's regexp ``$`` matches only at the very end of the text: ``fullmatch`` does the same here
# (Python's ``$`` would also match before a trailing newline).
PLUGIN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
PLUGIN_VERSION_PATTERN = re.compile(r"[0-9][0-9A-Za-z.+-]*")
LIBRARY_EXTENSIONS = (".so", ".dylib", ".dll")


def valid_plugin_id(plugin_id: str) -> bool:
    """The proxy's rule for a plugin id: ``^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$``."""
    return PLUGIN_ID_PATTERN.fullmatch(plugin_id) is not None


def valid_plugin_version(version: str) -> bool:
    """A ``-v<version>`` suffix counts only when the version matches ``^[0-9][0-9A-Za-z.+-]*$``."""
    return PLUGIN_VERSION_PATTERN.fullmatch(version) is not None


def split_versioned_name(file_name: str) -> tuple[str, str] | None:
    """``(id, version)`` for a library file name, or None when it is no valid plugin file name.

    The extension (``.so``, ``.dylib``, ``.dll``) matches in any case. The last ``-v`` splits off a
    version when both halves are valid; otherwise the whole stem is the id (version ``""``).
    """
    base = os.path.basename(file_name)
    lower = base.lower()
    for extension in LIBRARY_EXTENSIONS:
        if lower.endswith(extension):
            stem = base[: len(base) - len(extension)]
            break
    else:
        return None
    plugin_id, version = stem, ""
    index = stem.rfind("-v")
    if index > 0:
        candidate_id, candidate_version = stem[:index], stem[index + 2 :]
        if valid_plugin_id(candidate_id) and valid_plugin_version(candidate_version):
            plugin_id, version = candidate_id, candidate_version
    if not valid_plugin_id(plugin_id):
        return None
    return plugin_id, version


def plugin_id_from_path(path: str) -> str:
    """The plugin id the proxy gives the library at ``path`` (its ``pluginIDFromPath``).

    When the name is no valid plugin file name, the base name without its extension is returned as
    it is (the caller checks it with :func:`valid_plugin_id` before using it as a session id).
    """
    split = split_versioned_name(path)
    if split is not None:
        return split[0]
    base = os.path.basename(path)
    lower = base.lower()
    for extension in LIBRARY_EXTENSIONS:
        if lower.endswith(extension):
            return base[: len(base) - len(extension)]
    return base
