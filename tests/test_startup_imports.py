"""What a real ``hostd serve`` imports before it is ready (issue 16: the proxy runs one hostd
per plugin, so every module loaded at start is paid per plugin).

The process runs with ``PYTHONPROFILEIMPORTTIME=1`` (``-X importtime``): every module it
imports is named on stderr, next to its log lines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.hostd_proc import start_hostd

pytestmark = pytest.mark.anyio

# Not needed until something uses them: the command line's argparse (and its help
# formatter's shutil), the HTTP stack and the credential store until the first
# host.http.*/host.model.*/host.auth.* call, tomllib without a config file, difflib without
# an unknown key, pybase64 until the first byte field of an answer, and stdlib modules that
# are heavy for what hostd would use of them.
NOT_AT_START = frozenset(
    {
        "argparse",
        "gettext",
        "shutil",
        "hostd.cli_parser",
        "httpx",
        "httpcore",
        "h11",
        "anyio",
        "hostd.credentials",
        "hostd.upstream.http_client",
        "hostd.upstream.model_backend",
        "pybase64",
        "tomllib",
        "difflib",
        "secrets",
        "importlib.metadata",
        "email",
    }
)


async def imported_at_start(tmp: Path, *args: str) -> set[str]:
    auth = tmp / "auth"
    auth.mkdir(exist_ok=True)
    hp = await start_hostd(
        tmp,
        "--auth-dir",
        str(auth),
        "--model-base-url",
        "http://127.0.0.1:9",
        *args,
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    await hp.stop()
    return {
        line.rsplit("|", 1)[1].strip()
        for line in hp.stderr_lines
        if line.startswith("import time:") and not line.endswith("| imported package")
    }


async def test_serve_imports_nothing_it_does_not_need_to_be_ready(short_tmp: Path) -> None:
    modules = await imported_at_start(short_tmp)
    assert {"hostd.server", "hostd.handlers", "msgspec"} <= modules  # the list is read right
    assert modules & NOT_AT_START == set()


async def test_an_argument_that_is_not_plain_is_read_by_argparse(short_tmp: Path) -> None:
    """The check above can fail: an abbreviated flag takes the argparse path, and it shows."""
    modules = await imported_at_start(short_tmp, "--socket-m", "0600")
    assert {"argparse", "hostd.cli_parser"} <= modules
