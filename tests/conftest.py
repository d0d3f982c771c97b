"""Fixtures shared by the whole suite.

``--loop asyncio|uvloop`` (default ``$HOSTD_TEST_LOOP``, else ``asyncio``) picks the event
loop every hostd process in the run uses: CI runs the suite once on each, because they fail
differently. It reaches hostd through ``HOSTD_LOOP``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.fake_proxy import FakeProxy
from tests.support.hostd_proc import STARTED, HostdProcess, running_hostd
from tests.support.upstream import Upstream


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--loop",
        choices=("asyncio", "uvloop"),
        default=os.environ.get("HOSTD_TEST_LOOP", "asyncio"),
        help="event loop of every hostd the tests start",
    )


# Test modules that start no hostd whose event loop matters: pure units, the C bridge against its
# test double, unit-file checks, and the bench smoke (which measures both loops itself). The
# second loop's pass of `make test` deselects them (`-m "not loop_independent"`): they ran in the first.
LOOP_INDEPENDENT = frozenset(
    {
        "test_architecture",
        "test_auth_crash",
        "test_bench_smoke",
        "test_bridge",
        "test_bridge_scan",
        "test_bridge_spec",
        "test_c_asan",
        "test_cli_parse",
        "test_framing",
        "test_gocompat",
        "test_logline_c",
        "test_messages",
        "test_model_backend",
        "test_piece_buffer",
        "test_plain_records",
        "test_scan_c",
        "test_scopes",
        "test_units",
        "test_upstream_net",
    }
)


def pytest_configure(config: pytest.Config) -> None:
    os.environ["HOSTD_LOOP"] = config.getoption("--loop")
    config.addinivalue_line("markers", "loop_independent: starts no hostd whose event loop matters")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rpartition(".")[2] in LOOP_INDEPENDENT:
            item.add_marker(pytest.mark.loop_independent)


def pytest_report_header(config: pytest.Config) -> str:
    return f"hostd event loop: {config.getoption('--loop')}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test's report carries the last log lines of every hostd it started."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and STARTED:
        for i, hp in enumerate(STARTED):
            report.sections.append((f"hostd {i} log (last 40 lines)", "\n".join(hp.stderr_lines[-40:])))
    if call.when == "teardown":
        STARTED.clear()


@pytest.fixture
def hostd_loop(pytestconfig: pytest.Config) -> str:
    """The event loop the hostd processes of this run use."""
    return str(pytestconfig.getoption("--loop"))


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Session scope, so module-scoped async fixtures (a hostd shared by a module) work anywhere."""
    return "asyncio"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory: Unix socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="hostd-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream() as server:
        yield server


@pytest.fixture
def proxy_api_key() -> str:
    """The key the fake proxy demands: none. A module that wants one overrides this fixture."""
    return ""


@pytest.fixture
async def proxy(proxy_api_key: str) -> AsyncIterator[FakeProxy]:
    """A fake CLIProxyAPI on 127.0.0.1 (tests/support/fake_proxy.py), fresh for each test."""
    async with FakeProxy(api_key=proxy_api_key) as server:
        yield server


@pytest.fixture
async def hostd(short_tmp: Path) -> AsyncIterator[HostdProcess]:
    """hostd serving on a Unix socket, with the model and auth families off."""
    async with running_hostd(short_tmp) as hp:
        yield hp


@pytest.fixture
async def hp(short_tmp: Path) -> AsyncIterator[HostdProcess]:
    """A fresh hostd with a plugin socket and a control socket."""
    async with running_hostd(short_tmp, control=True) as proc:
        yield proc
