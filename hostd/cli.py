"""Command line: ``hostd serve``, ``hostd run``, ``hostd call``, ``hostd status``, ``hostd invoke``.

Parses arguments into config overrides and hands them to :mod:`hostd.server`. Exit codes:
0 after a clean shutdown, 1 when hostd cannot start, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hostd import __version__
from hostd.config import Config, ConfigError, ConfigSources
from hostd.eventloop import run_daemon
from hostd.logs import Logger, configure_from
from hostd.server import ChildSupervisor, Daemon, StartupError, raise_nofile_limit
from hostd.systemd import ActivationError


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", help="stdio (default) or unix:PATH")
    p.add_argument("--control", help="control endpoint, unix:PATH")
    p.add_argument("--socket-mode", help="octal mode of the plugin socket (default 0600)")
    p.add_argument("--auth-dir", help="the proxy's auth directory ('' turns host.auth.* off)")
    p.add_argument("--model-base-url", help="the proxy's HTTP API ('' turns host.model.* off)")
    p.add_argument("--config", help="TOML config file (default $HOSTD_CONFIG)")
    p.add_argument("--log-level", help="trace, debug, info, warn or error")
    p.add_argument("--log-format", choices=("auto", "json", "text"), help="default: text on a terminal, else JSON")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), help="event loop (default auto)")
    p.add_argument("--max-line-bytes", type=int)
    p.add_argument("--max-in-flight", type=int)
    p.add_argument("--max-streams", type=int)
    p.add_argument("--stream-idle-timeout", type=float, help="seconds")
    p.add_argument("--http-timeout", type=float, help="seconds, total for host.http.do")
    p.add_argument("--shutdown-grace", type=float, help="seconds")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostd", description="CLIProxyAPI host API for out-of-process plugins")
    parser.add_argument("--version", action="version", version=f"hostd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve plugins on stdio or a Unix socket")
    _serve_options(serve)
    run = sub.add_parser("run", help="spawn one plugin and serve it on its stdio")
    _serve_options(run)
    run.add_argument("--name", help="the plugin's name (its plugin id)")
    run.add_argument("--native", metavar="PATH", help="run a native plugin library (.so) in a worker process")
    run.add_argument("--restart", choices=("yes", "no"), default="yes", help="restart a dead native worker")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    call = sub.add_parser("call", help="call one method and print its result as JSON")
    target = call.add_mutually_exclusive_group()
    target.add_argument("--connect", help="plugin socket, unix:PATH (default $HOSTD_SOCKET)")
    target.add_argument("--control", help="control socket, unix:PATH (default $HOSTD_CONTROL)")
    call.add_argument("--timeout", type=float, default=None, help="seconds to wait for the answer")
    call.add_argument("method")
    call.add_argument("params", nargs="?", default=None, help="params as a JSON object")
    invoke = sub.add_parser("invoke", help="invoke a method on a plugin (streams too) from the control socket")
    invoke.add_argument("--control", help="control socket, unix:PATH (default $HOSTD_CONTROL)")
    invoke.add_argument("--plugin", required=True, help="the plugin id to invoke")
    invoke.add_argument("--stream", action="store_true", help="open an emit stream and print its chunks")
    invoke.add_argument("--timeout", type=float, default=None, help="seconds for the answer and for each chunk")
    invoke.add_argument("method")
    invoke.add_argument("params", nargs="?", default=None, help="params as a JSON object")
    status = sub.add_parser("status", help="show sessions and streams")
    status.add_argument("--control", help="control socket, unix:PATH (default $HOSTD_CONTROL)")
    status.add_argument("--json", action="store_true", help="print the raw JSON (same as --format json)")
    status.add_argument("--format", choices=("table", "json", "prometheus"), default=None, help="output format")
    bridge = sub.add_parser("bridge", help="started by hostd-bridge.so inside the proxy (its stdio is the bridge)")
    _serve_options(bridge)
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate the effective configuration and print it")
    _serve_options(check)
    return parser


def sources_from_args(args: argparse.Namespace) -> ConfigSources:
    """Where the configuration comes from: ``--config`` (or ``$HOSTD_CONFIG``), env, flags."""
    overrides: dict[str, Any] = {}
    flag_names: dict[str, str] = {}
    for attr, key in _FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides[key] = value
            flag_names[key] = "--" + attr.replace("_", "-")
    return ConfigSources(getattr(args, "config", None), overrides, None, flag_names)


def config_from_args(args: argparse.Namespace) -> Config:
    return sources_from_args(args).load()


def _serve(args: argparse.Namespace, child: Callable[[Config, Logger], ChildSupervisor] | None = None) -> int:
    """Run the daemon (with ``hostd run``'s child supervisor inside it); returns the exit code."""
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


def cmd_serve(args: argparse.Namespace) -> int:
    return _serve(args)


def cmd_run(args: argparse.Namespace) -> int:
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


def cmd_bridge(args: argparse.Namespace) -> int:
    from hostd.bridge.host import BridgeHost

    def options(extra: list[str]) -> Config:
        """The ``args`` of the plugin's hostd block, read as ``hostd run`` options."""
        try:
            parsed = build_parser().parse_args(["run", *extra])
        except SystemExit:
            raise ConfigError(f"invalid args {' '.join(extra)!r}") from None
        return config_from_args(parsed)

    return _serve(args, lambda config, logger: BridgeHost(config, logger, options))


def cmd_call(args: argparse.Namespace) -> int:
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


def cmd_status(args: argparse.Namespace) -> int:
    from hostd.status_cli import show_status

    fmt = args.format or ("json" if args.json else "table")
    return int(show_status(args.control or os.environ.get("HOSTD_CONTROL", ""), fmt=fmt))


def cmd_config(args: argparse.Namespace) -> int:
    from hostd.config_check import check

    return check(sources_from_args(args))


def cmd_invoke(args: argparse.Namespace) -> int:
    from hostd.invoke_cli import invoke

    address = args.control or os.environ.get("HOSTD_CONTROL", "")
    return invoke(address, args.plugin, args.method, args.params, stream=args.stream, timeout=args.timeout)


COMMANDS = {
    "serve": cmd_serve,
    "run": cmd_run,
    "bridge": cmd_bridge,
    "call": cmd_call,
    "status": cmd_status,
    "invoke": cmd_invoke,
}
COMMANDS["config"] = cmd_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"hostd: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
