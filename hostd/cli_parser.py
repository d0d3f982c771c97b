"""hostd's argparse parser: ``--help``, every usage error, and the commands that are not a
daemon's plainly valid start (those :func:`hostd.cli.parse_quick` reads without argparse).

Imported only when needed: argparse, the ``shutil`` of its help formatter and a parser
would cost every hostd ~0.9 MiB and ~8 ms. It knows the daemon options only as ``hostd.cli``
hands them over (flag, ``add_argument`` keywords), so there is one list of them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Options = Sequence[tuple[str, Mapping[str, Any]]]


def build_parser(version: str, serve: Options, run: Options, only: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand is listed (``hostd --help`` names them all), but with ``only`` set only
    that one gets its arguments (each ``add_argument`` builds a help formatter: ~0.4 ms)."""

    def options(p: argparse.ArgumentParser, table: Options) -> None:
        for flag, kw in table:
            p.add_argument(flag, **kw)

    def run_parser(p: argparse.ArgumentParser) -> None:
        options(p, run)
        p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")

    def config_parser(config: argparse.ArgumentParser) -> None:
        config_sub = config.add_subparsers(dest="config_command", required=True)
        options(config_sub.add_parser("check", help="validate the effective configuration and print it"), serve)

    # In the order of `hostd --help`: each subcommand's one-line help and what adds its arguments.
    subcommands: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
        "serve": ("serve plugins on stdio or a Unix socket", lambda p: options(p, serve)),
        "run": ("spawn one plugin and serve it on its stdio", run_parser),
        "call": ("call one method and print its result as JSON", _call_parser),
        "invoke": ("invoke a method on a plugin (streams too) from the control socket", _invoke_parser),
        "status": ("show sessions and streams", _status_parser),
        "bridge": (
            "started by hostd-bridge.so inside the proxy (its stdio is the bridge)",
            lambda p: options(p, serve),
        ),
        "config": ("configuration tools", config_parser),
    }
    parser = argparse.ArgumentParser(prog="hostd", description="CLIProxyAPI host API for out-of-process plugins")
    parser.add_argument("--version", action="version", version=f"hostd {version}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments) in subcommands.items():
        p = sub.add_parser(name, help=help_text)
        if only is None or name == only:
            add_arguments(p)
    return parser


def _call_parser(call: argparse.ArgumentParser) -> None:
    target = call.add_mutually_exclusive_group()
    target.add_argument("--connect", help="plugin socket, unix:PATH (default $HOSTD_SOCKET)")
    target.add_argument("--control", help="control socket, unix:PATH (default $HOSTD_CONTROL)")
    call.add_argument("--timeout", type=float, default=None, help="seconds to wait for the answer")
    call.add_argument("method")
    call.add_argument("params", nargs="?", default=None, help="params as a JSON object")


def _invoke_parser(invoke: argparse.ArgumentParser) -> None:
    invoke.add_argument("--control", help="control socket, unix:PATH (default $HOSTD_CONTROL)")
    invoke.add_argument("--plugin", required=True, help="the plugin id to invoke")
    invoke.add_argument("--stream", action="store_true", help="open an emit stream and print its chunks")
    invoke.add_argument("--timeout", type=float, default=None, help="seconds for the answer and for each chunk")
    invoke.add_argument("method")
    invoke.add_argument("params", nargs="?", default=None, help="params as a JSON object")


def _status_parser(status: argparse.ArgumentParser) -> None:
    status.add_argument("--control", help="control socket, unix:PATH (default $HOSTD_CONTROL)")
    status.add_argument("--json", action="store_true", help="print the raw JSON (same as --format json)")
    status.add_argument("--format", choices=("table", "json", "prometheus"), default=None, help="output format")
