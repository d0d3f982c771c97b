"""systemd integration without libsystemd: sd_notify messages and socket activation.

``Notifier`` sends READY, STATUS, WATCHDOG, RELOADING and STOPPING; ``inherited_sockets``
reads the sockets systemd passed and refuses a set-up that cannot work (PROTOCOL §12).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends datagrams to ``$NOTIFY_SOCKET``; does nothing when hostd is not under systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if path:
            self._address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_interval_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> None:
        if self._address is None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(self._address)
            sock.send(message.encode())
        except OSError:
            pass
        finally:
            sock.close()


# Socket activation ----------------------------------------------------------------------

SD_LISTEN_FDS_START = 3
ACTIVATION_NAMES = ("plugins", "control")
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ActivationError(Exception):
    """Sockets handed over by systemd that hostd refuses to start with (exit code 2)."""


def inherited_sockets(
    environ: Mapping[str, str] | None = None, *, require_plugin: bool = True
) -> tuple[list[socket.socket], list[socket.socket]]:
    """The sockets systemd passed (``LISTEN_PID``/``LISTEN_FDS``), as (plugin, control) lists.

    With ``LISTEN_FDNAMES`` each socket is named after the ``FileDescriptorName=`` of its
    ``.socket`` unit: the names may only be ``plugins`` and ``control``, at most one socket
    each; anything else, a duplicate name, or no ``plugins`` socket (unless
    ``require_plugin`` is false, as for ``hostd run``, whose plugin is on its stdio) raises
    :class:`ActivationError` naming the problem, before any socket is touched. Without
    names, every inherited socket is a plugin socket. Nothing inherited: two empty lists.

    When ``environ`` is None the process environment is read and the three variables are
    removed from it, so that children (``hostd run``'s plugin) do not inherit them.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    pid = env.get("LISTEN_PID", "")
    fds = env.get("LISTEN_FDS", "")
    names_var = env.get("LISTEN_FDNAMES")
    if environ is None:
        for var in _LISTEN_VARS:
            os.environ.pop(var, None)
    if not pid or pid != str(os.getpid()):
        return [], []
    try:
        count = int(fds)
    except ValueError:
        raise ActivationError(f"LISTEN_FDS={fds!r} is not a number") from None
    if count <= 0:
        return [], []
    if names_var is None:
        names = ["plugins"] * count
    else:
        names = names_var.split(":")
        if len(names) != count:
            raise ActivationError(f"LISTEN_FDNAMES={names_var!r} names {len(names)} sockets but LISTEN_FDS={count}")
        problems = []
        unknown = [n for n in names if n not in ACTIVATION_NAMES]
        if unknown:
            problems.append(
                "unknown socket name" + ("s " if len(unknown) > 1 else " ") + ", ".join(repr(n) for n in unknown)
                + " (FileDescriptorName= may only be plugins or control)"
            )  # fmt: skip
        for name in ACTIVATION_NAMES:
            if names.count(name) > 1:
                problems.append(
                    f"{names.count(name)} sockets named {name!r} (one .socket unit per socket, "
                    "each with its own FileDescriptorName=)"
                )
        if problems:
            raise ActivationError(f"socket activation: {'; '.join(problems)} (LISTEN_FDNAMES={names_var})")
    if require_plugin and "plugins" not in names:
        raise ActivationError(
            f"socket activation passed no plugin socket (LISTEN_FDNAMES={names_var}): "
            "add a .socket unit with FileDescriptorName=plugins to the service's Sockets="
        )
    plugin: list[socket.socket] = []
    control: list[socket.socket] = []
    try:
        for i, name in enumerate(names):
            fd = SD_LISTEN_FDS_START + i
            sock = _listening_socket(fd, name)
            (plugin if name == "plugins" else control).append(sock)
    except ActivationError:
        for sock in plugin + control:
            sock.detach()
        raise
    return plugin, control


def _listening_socket(fd: int, name: str) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise ActivationError(f"socket activation: fd {fd} ({name}) is not a socket: {e.strerror}") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ActivationError(
            f"socket activation: fd {fd} ({name}) is not a Unix stream socket (use ListenStream=/path)"
        )
    os.set_inheritable(fd, False)
    sock.setblocking(False)
    return sock
