"""Command line: ``hostd serve``, ``hostd run``, ``hostd call``, ``hostd status``, ``hostd invoke``.

Parses arguments into config overrides and hands them to :mod:`hostd.server`. Exit codes:
0 after a clean shutdown, 1 when hostd cannot start, 2 on a usage or configuration error.

Start-up is paid once per plugin (the proxy runs one hostd each), so the daemon commands
(``serve``, ``run``, ``bridge``) parse plainly valid arguments without argparse
(:func:`parse_quick`: argparse, the help formatter's ``shutil`` and a parser cost ~8 ms and
~0.9 MiB per process) and import the daemon only once the command is known. Anything else
(help, an abbreviated flag, any error) goes to argparse, which builds only the chosen
subcommand's parser, so every message is argparse's own.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeAlias

from hostd import __version__

if TYPE_CHECKING:
    import argparse

    from hostd.config import Config, ConfigSources
    from hostd.logs import Logger
    from hostd.server import ChildSupervisor

Args: TypeAlias = "argparse.Namespace | SimpleNamespace"


class _Option:
    """One ``--flag VALUE`` option: argparse's ``add_argument`` keywords, and what :func:`parse_quick`
    checks. A plain class: a NamedTuple or a dataclass compiles code at every start (~1 ms)."""

    __slots__ = ("choices", "default", "dest", "flag", "help", "metavar", "type")

    def __init__(
        self,
        flag: str,
        help: str | None = None,
        *,
        type: Callable[[str], Any] | None = None,
        choices: tuple[str, ...] | None = None,
        default: str | None = None,
        metavar: str | None = None,
    ) -> None:
        self.flag, self.help, self.type, self.choices = flag, help, type, choices
        self.default, self.metavar = default, metavar
        self.dest = flag[2:].replace("-", "_")

    def argparse_entry(self) -> tuple[str, dict[str, Any]]:
        """(flag, ``add_argument`` keywords) for :mod:`hostd.cli_parser`."""
        kw = {"help": self.help, "type": self.type, "choices": self.choices, "default": self.default}
        kw["metavar"] = self.metavar
        return self.flag, {k: v for k, v in kw.items() if v is not None}


SERVE_OPTIONS = (
    _Option("--listen", "stdio (default) or unix:PATH"),
    _Option("--control", "control endpoint, unix:PATH"),
    _Option("--socket-mode", "octal mode of the plugin socket (default 0600)"),
    _Option("--auth-dir", "the proxy's auth directory ('' turns host.auth.* off)"),
    _Option("--model-base-url", "the proxy's HTTP API ('' turns host.model.* off)"),
    _Option("--config", "TOML config file (default $HOSTD_CONFIG)"),
    _Option("--log-level", "trace, debug, info, warn or error"),
    _Option("--log-format", "default: text on a terminal, else JSON", choices=("auto", "json", "text")),
    _Option("--loop", "event loop (default auto)", choices=("auto", "asyncio", "uvloop")),
    _Option("--max-line-bytes", type=int),
    _Option("--max-in-flight", type=int),
    _Option("--max-streams", type=int),
    _Option("--stream-idle-timeout", "seconds", type=float),
    _Option("--http-timeout", "seconds, total for host.http.do", type=float),
    _Option("--shutdown-grace", "seconds", type=float),
)
RUN_OPTIONS = (
    _Option("--name", "the plugin's name (its plugin id)"),
    _Option("--native", "run a native plugin library (.so) in a worker process", metavar="PATH"),
    _Option("--restart", "restart a dead native worker", choices=("yes", "no"), default="yes"),
)
# The commands parse_quick knows, with their options; "run" also takes "-- CMD [ARGS...]".
QUICK_COMMANDS = {"serve": SERVE_OPTIONS, "run": SERVE_OPTIONS + RUN_OPTIONS, "bridge": SERVE_OPTIONS}


_FLAG_KEYS = {
    "listen": "listen",
    "control": "control",
    "socket_mode": "socket_mode",
    "auth_dir": "auth.dir",
    "model_base_url": "model.base_url",
    "log_level": "log_level",
    "log_format": "log.format",
    "loop": "loop",
    "max_line_bytes": "limits.max_line_bytes",
    "max_in_flight": "limits.max_in_flight",
    "max_streams": "limits.max_streams",
    "stream_idle_timeout": "limits.stream_idle_timeout_s",
    "http_timeout": "http.timeout_s",
    "shutdown_grace": "shutdown_grace_s",
    "name": "name",
}


def parse_quick(argv: Sequence[str]) -> SimpleNamespace | None:
    """``serve``, ``run`` and ``bridge`` arguments as argparse would parse them, without argparse,
    when each is plainly valid: a flag of the command spelled in full (``--flag VALUE`` or
    ``--flag=VALUE``) with a value that does not start with ``-``, converts and is among the
    choices; for ``run``, then ``-- CMD [ARGS...]``. Anything else returns None, for argparse
    to parse or to explain (help, abbreviations, errors). tests/test_cli_parse.py holds it
    to argparse's result."""
    if not argv or argv[0] not in QUICK_COMMANDS:
        return None
    command = argv[0]
    options = {o.flag: o for o in QUICK_COMMANDS[command]}
    values: dict[str, Any] = {o.dest: o.default for o in options.values()}
    values["command"] = command
    if command == "run":
        values["cmd"] = []
    i = 1
    while i < len(argv):
        token = argv[i]
        if command == "run" and token == "--":
            values["cmd"] = list(argv[i:])  # argparse keeps the "--" of a REMAINDER; cmd_run drops it
            break
        flag, eq, value = token.partition("=")
        option = options.get(flag)
        if option is None:
            return None
        if not eq:
            i += 1
            if i == len(argv):
                return None
            value = argv[i]
        if value.startswith("-"):
            return None
        if option.type is not None:
            try:
                value = option.type(value)
            except (TypeError, ValueError):
                return None
        if option.choices is not None and value not in option.choices:
            return None
        values[option.dest] = value
        i += 1
    return SimpleNamespace(**values)


def parse_args(argv: Sequence[str]) -> Args:
    """The command line as a namespace: :func:`parse_quick`'s, else argparse's (which exits 2
    with its message on an error, 0 after ``--help``)."""
    quick = parse_quick(argv)
    if quick is not None:
        return quick
    command = next((a for a in argv if not a.startswith("-")), None)
    return build_parser(only=command).parse_args(argv)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """hostd's argparse parser (:mod:`hostd.cli_parser`): every subcommand listed, all of them
    with their arguments, or only ``only``."""
    from hostd.cli_parser import build_parser as build

    serve = [o.argparse_entry() for o in SERVE_OPTIONS]
    return build(__version__, serve, serve + [o.argparse_entry() for o in RUN_OPTIONS], only)


def sources_from_args(args: Args) -> ConfigSources:
    """Where the configuration comes from: ``--config`` (or ``$HOSTD_CONFIG``), env, flags."""
    from hostd.config import ConfigSources

    overrides: dict[str, Any] = {}
    flag_names: dict[str, str] = {}
    for attr, key in _FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides[key] = value
            flag_names[key] = "--" + attr.replace("_", "-")
    return ConfigSources(getattr(args, "config", None), overrides, None, flag_names)


def config_from_args(args: Args) -> Config:
    return sources_from_args(args).load()


def _serve(args: Args, child: Callable[[Config, Logger], ChildSupervisor] | None = None) -> int:
    """Run the daemon (with ``hostd run``'s child supervisor inside it); returns the exit code."""
    from hostd.eventloop import run_daemon
    from hostd.logs import configure_from
    from hostd.server import Daemon, StartupError, raise_nofile_limit
    from hostd.systemd import ActivationError

    config = config_from_args(args)
    logger = configure_from(config)
    raise_nofile_limit()

    def reload() -> Config:
        return config_from_args(args)  # the same sources as the start: --config, env, flags

    async def main() -> int:
        try:
            daemon = Daemon(config, logger, reload=reload)
            daemon.services.config_file = getattr(args, "config", None) or os.environ.get("HOSTD_CONFIG") or None
            return await daemon.run(child(config, logger) if child is not None else None)
        except StartupError as e:
            logger.error("cannot start", error=str(e))
            return 1
        except ActivationError as e:  # sockets from systemd that cannot work: a configuration error
            logger.error("cannot start", error=str(e))
            return 2

    try:
        return run_daemon(config, main)
    finally:
        logger.flush()


def cmd_serve(args: Args) -> int:
    return _serve(args)


def cmd_run(args: Args) -> int:
    from hostd.runner import PluginRunner

    if args.native:
        from hostd.native.driver import NativeRunner

        if args.cmd:
            print("hostd run: --native takes no command", file=sys.stderr)
            return 2
        from hostd.native.naming import plugin_id_from_path, valid_plugin_id

        path, restart = args.native, args.restart == "yes"
        if not args.name and not valid_plugin_id(plugin_id_from_path(path)):
            print(
                f"hostd run: no valid plugin id in the file name {os.path.basename(path)!r}: use --name",
                file=sys.stderr,
            )
            return 2
        return _serve(args, lambda config, logger: NativeRunner(config, logger, path, restart=restart))
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("hostd run: missing plugin command (hostd run [options] -- CMD [ARGS...])", file=sys.stderr)
        return 2
    if getattr(args, "listen", None) not in (None, "stdio"):
        print("hostd run: the plugin is served on its stdio; --listen is not supported here", file=sys.stderr)
        return 2
    return _serve(args, lambda config, logger: PluginRunner(config, logger, cmd))


def cmd_bridge(args: Args) -> int:
    from hostd.bridge.host import BridgeHost
    from hostd.config import ConfigError

    def options(extra: list[str]) -> Config:
        """The ``args`` of the plugin's hostd block, read as ``hostd run`` options."""
        try:
            parsed = parse_args(["run", *extra])
        except SystemExit:
            raise ConfigError(f"invalid args {' '.join(extra)!r}") from None
        return config_from_args(parsed)

    return _serve(args, lambda config, logger: BridgeHost(config, logger, options))


def cmd_call(args: Args) -> int:
    import asyncio

    import orjson

    from hostd.client import Client, ConnectionClosed, RpcError

    params = None
    if args.params is not None:
        try:
            params = orjson.loads(args.params)
        except orjson.JSONDecodeError as e:
            print(f"hostd call: PARAMS is not valid JSON: {e}", file=sys.stderr)
            return 2
    if args.control:
        address = args.control
    elif args.connect:
        address = args.connect
    else:
        address = os.environ.get("HOSTD_SOCKET") or os.environ.get("HOSTD_CONTROL", "")

    async def main() -> int:
        try:
            client = await Client.connect(address)
        except (OSError, ValueError) as e:
            print(f"hostd call: cannot connect to {address or '(no address)'}: {e}", file=sys.stderr)
            return 2
        async with client:
            try:
                result = await client.call(args.method, params, timeout=args.timeout)
            except RpcError as e:
                print(orjson.dumps({"error": e.error}).decode(), file=sys.stderr)
                return 1
            except TimeoutError:
                print("hostd call: no answer within the timeout", file=sys.stderr)
                return 1
            except ConnectionClosed:
                print("hostd call: hostd closed the connection before answering", file=sys.stderr)
                return 1
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0

    return asyncio.run(main())


def cmd_status(args: Args) -> int:
    from hostd.status_cli import show_status

    fmt = args.format or ("json" if args.json else "table")
    return int(show_status(args.control or os.environ.get("HOSTD_CONTROL", ""), fmt=fmt))


def cmd_config(args: Args) -> int:
    from hostd.config_check import check

    return check(sources_from_args(args))


def cmd_invoke(args: Args) -> int:
    from hostd.invoke_cli import invoke

    address = args.control or os.environ.get("HOSTD_CONTROL", "")
    return invoke(address, args.plugin, args.method, args.params, stream=args.stream, timeout=args.timeout)


COMMANDS: dict[str, Callable[[Args], int]] = {
    "serve": cmd_serve,
    "run": cmd_run,
    "bridge": cmd_bridge,
    "call": cmd_call,
    "status": cmd_status,
    "invoke": cmd_invoke,
}
COMMANDS["config"] = cmd_config


def main(argv: Sequence[str] | None = None) -> int:
    collecting = gc.isenabled()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        from hostd.config import ConfigError

        # A daemon runs no cyclic GC from here to its loop: what its imports allocate lives
        # on, so the collections they would trigger (~3% of a start) find next to nothing;
        # run_daemon turns it back on with those objects frozen (eventloop.tune_gc). Not
        # earlier: the garbage of the first imports (datetime's pure-Python classes, through
        # msgspec) would be frozen with them, ~0.25 MiB. Other commands (an `invoke --stream`
        # may run for hours) keep it.
        if args.command in QUICK_COMMANDS:
            gc.disable()
        try:
            return COMMANDS[args.command](args)
        except ConfigError as e:
            print(f"hostd: {e}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if collecting:
            gc.enable()
