from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.hostd_proc import HostdProcess, start_hostd
from tests.support.upstream import Upstream


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory: Unix socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="hostd-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = await Upstream().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def hostd(short_tmp: Path) -> AsyncIterator[HostdProcess]:
    """hostd serving on a Unix socket, with the model and auth families off."""
    hp = await start_hostd(short_tmp)
    try:
        yield hp
    finally:
        await hp.stop()


@pytest.fixture
async def hp(short_tmp: Path) -> AsyncIterator[HostdProcess]:
    """A fresh hostd with a plugin socket and a control socket."""
    proc = await start_hostd(short_tmp, control=True)
    try:
        yield proc
    finally:
        await proc.stop()
