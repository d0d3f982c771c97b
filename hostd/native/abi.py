"""The C ABI of CLIProxyAPI plugins (``sdk/pluginabi``, version 1) and loading a library with it.

What is here: the ctypes declarations of the two function tables and the buffer, and
:func:`load` / :func:`shutdown_table`, which do exactly what the proxy's loader does
(``dlopen(RTLD_NOW | RTLD_LOCAL)``, ``cliproxy_plugin_init``, the ABI and table checks, the table's
``shutdown`` before a late failure is reported) and fail with the proxy's own words.

This module never speaks the protocol, never starts threads and never imports hostd's daemon
modules: it is part of the native worker, which is standard library only.
"""

from __future__ import annotations

import ctypes
import os

ABI_VERSION = 1


class Buffer(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t)]


HOST_CALL = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(Buffer)
)
HOST_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t)
PLUGIN_CALL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(Buffer))
PLUGIN_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t)
PLUGIN_SHUTDOWN = ctypes.CFUNCTYPE(None)


class HostApi(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("host_ctx", ctypes.c_void_p),
        ("call", HOST_CALL),
        ("free_buffer", HOST_FREE),
    ]


class PluginApi(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("call", PLUGIN_CALL),
        ("free_buffer", PLUGIN_FREE),
        ("shutdown", PLUGIN_SHUTDOWN),
    ]


class LoadError(Exception):
    """The library cannot be used; the message is the proxy's loader's text."""


def libc() -> ctypes.CDLL:
    """The C library with ``malloc``/``free``/``fflush`` declared (host-call buffers, stdout)."""
    lib = ctypes.CDLL(None, use_errno=True)
    lib.malloc.restype = ctypes.c_void_p
    lib.malloc.argtypes = [ctypes.c_size_t]
    lib.free.restype = None
    lib.free.argtypes = [ctypes.c_void_p]
    lib.fflush.argtypes = [ctypes.c_void_p]
    return lib


def load(path: str, host: HostApi, plugin: PluginApi) -> ctypes.CDLL:
    """Load and initialise the library, filling ``plugin``; raises :class:`LoadError` with the proxy's words.

    ``host`` (and the callbacks in it) must live as long as the process: plugins keep the pointer.
    """
    # dlopen searches the library path for a bare name; the proxy always passes a path.
    target = path if "/" in path else os.path.join(".", path)
    try:
        library = ctypes.CDLL(target, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError as exc:
        raise LoadError(f"dlopen {path}: {exc}") from None
    try:
        init = library.cliproxy_plugin_init
    except AttributeError as exc:
        raise LoadError(f"missing cliproxy_plugin_init: {exc}") from None
    init.argtypes = [ctypes.POINTER(HostApi), ctypes.POINTER(PluginApi)]
    init.restype = ctypes.c_int
    rc = init(ctypes.byref(host), ctypes.byref(plugin))
    if rc != 0:
        shutdown_table(plugin)
        raise LoadError(f"cliproxy_plugin_init returned {rc}")
    if plugin.abi_version != ABI_VERSION:
        version = plugin.abi_version
        shutdown_table(plugin)
        raise LoadError(f"plugin ABI version {version} is not supported")
    if not plugin.call or not plugin.free_buffer:
        shutdown_table(plugin)
        raise LoadError("plugin function table is incomplete")
    return library


def shutdown_table(plugin: PluginApi) -> None:
    """Run the table's ``shutdown`` once (when the plugin set one)."""
    # A function pointer read from a Structure shares the Structure's memory: copy the address
    # before clearing the field (so shutdown runs once).
    address = ctypes.cast(plugin.shutdown, ctypes.c_void_p).value
    if address:
        plugin.shutdown = PLUGIN_SHUTDOWN()
        PLUGIN_SHUTDOWN(address)()
