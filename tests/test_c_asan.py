"""hostd's C modules under AddressSanitizer and UndefinedBehaviorSanitizer: each is built from its
source with both (and ``-Wall -Wextra -Werror``), loaded in place of the installed module in a
Python of its own, and its tests run against it: the scanner's property tests
(``tests/test_scan_c.py``) and the log writer's (``tests/test_logline_c.py``, its thread
included). Any out-of-bounds access or undefined behaviour fails the run (leak checks are off:
CPython's own allocations would drown them)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = """
import importlib.util, sys
import hostd
name, so, tests, basetemp = sys.argv[1:5]
spec = importlib.util.spec_from_file_location(name, so)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules[name] = module
import pytest
sys.exit(pytest.main([tests, "-q", "-p", "no:cacheprovider", "--basetemp", basetemp]))
"""
MODULES = {"hostd._scan": "tests/test_scan_c.py", "hostd._logline": "tests/test_logline_c.py"}


def _runtime(name: str) -> str:
    return subprocess.run(["cc", f"-print-file-name={name}"], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("name", list(MODULES))
def test_the_c_module_is_clean_under_asan_and_ubsan(tmp_path: Path, name: str) -> None:
    stem = name.rpartition(".")[2]
    so = tmp_path / f"{stem}.so"
    include = sysconfig.get_paths()["include"]
    flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-fno-omit-frame-pointer"]
    flags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fPIC", "-shared", "-pthread"]
    subprocess.run(["cc", *flags, f"-I{include}", str(ROOT / "hostd" / f"{stem}.c"), "-o", str(so)], check=True)
    env = {
        **os.environ,
        "LD_PRELOAD": f"{_runtime('libasan.so')} {_runtime('libubsan.so')}",
        "ASAN_OPTIONS": "detect_leaks=0",  # CPython's own allocations are not ours to judge
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }
    argv = [sys.executable, "-c", RUN, name, str(so), MODULES[name], str(tmp_path / "pt")]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-2000:]
