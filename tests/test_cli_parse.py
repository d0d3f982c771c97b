"""``hostd serve``/``run``/``bridge`` arguments read without argparse (``parse_quick``) are
exactly what argparse reads from them, and everything that is not plainly valid goes to
argparse (whose help and errors are the ones users see)."""

from __future__ import annotations

import gc

import pytest

from hostd import cli, config_check
from hostd.config import ConfigSources

VALID = [
    ["serve"],
    ["serve", "--listen", "unix:/tmp/h.sock", "--loop", "uvloop", "--log-level", "info"],
    ["serve", "--auth-dir", "", "--model-base-url", ""],
    ["serve", "--listen=unix:/tmp/a=b.sock", "--log-format=json", "--max-line-bytes=1024"],
    ["serve", "--max-in-flight", "8", "--max-streams", "3", "--stream-idle-timeout", "1.5"],
    ["serve", "--http-timeout", "2", "--shutdown-grace", "0.25", "--socket-mode", "0660"],
    ["serve", "--loop", "asyncio", "--loop", "auto"],  # the last one wins, as in argparse
    ["serve", "--config", "/etc/hostd.toml", "--control", "unix:/tmp/c.sock"],
    ["bridge", "--log-level", "debug", "--auth-dir", "/tmp/auth"],
    ["run", "--", "python", "-c", "print(1)", "--listen", "x"],
    ["run", "--name", "p1", "--loop", "uvloop", "--", "true"],
    ["run", "--native", "/tmp/libp.so", "--restart", "no"],
    ["run", "--restart=yes", "--native=/tmp/libp.so", "--name=n"],
    ["run"],
    ["run", "--"],
]

NOT_PLAIN = [
    [],
    ["--help"],
    ["--version"],
    ["serve", "--help"],
    ["serve", "-h"],
    ["serve", "--lis", "unix:/tmp/h.sock"],  # an abbreviation: argparse accepts it, parse_quick leaves it
    ["serve", "--loop", "fast"],
    ["serve", "--log-format=xml"],
    ["serve", "--max-line-bytes", "lots"],
    ["serve", "--max-in-flight", "-1"],
    ["serve", "--listen"],
    ["serve", "--listen", "--loop", "asyncio"],
    ["serve", "extra"],
    ["serve", "--name", "p"],  # run's option, not serve's
    ["serve", "--"],
    ["run", "true"],
    ["run", "--restart", "maybe", "--", "true"],
    ["call", "hostd.status"],
    ["status"],
    ["config", "check"],
    ["bogus"],
]


@pytest.mark.parametrize("argv", VALID, ids=" ".join)
def test_plain_arguments_read_as_argparse_reads_them(argv: list[str]) -> None:
    quick = cli.parse_quick(argv)
    assert quick is not None
    assert vars(quick) == vars(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", NOT_PLAIN, ids=" ".join)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert cli.parse_quick(argv) is None


def test_the_parser_for_one_subcommand_reads_it_as_the_full_parser_does() -> None:
    argv = ["run", "--loo", "asyncio", "--", "true"]  # abbreviated: argparse's own reading
    assert vars(cli.build_parser(only="run").parse_args(argv)) == vars(cli.build_parser().parse_args(argv))
    assert cli.parse_args(argv).loop == "asyncio"


def test_a_usage_error_exits_2_through_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["serve", "--loop", "fast"])
    assert e.value.code == 2
    assert "argument --loop: invalid choice: 'fast'" in capsys.readouterr().err


def test_a_command_that_is_not_a_daemon_runs_with_cyclic_gc(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a daemon's start goes without it (its loop turns it back on): ``hostd config
    check`` here, like an ``invoke --stream`` that may run for hours, keeps it on."""
    assert gc.isenabled()
    seen: list[bool] = []
    real_check = config_check.check

    def check(sources: ConfigSources) -> int:
        seen.append(gc.isenabled())
        return real_check(sources)

    monkeypatch.setattr(config_check, "check", check)
    assert cli.main(["config", "check", "--loop", "asyncio"]) == 0
    assert seen == [True] and gc.isenabled()
    assert 'loop = "asyncio"' in capsys.readouterr().out
