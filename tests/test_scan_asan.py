"""hostd._scan under AddressSanitizer and UndefinedBehaviorSanitizer: the scanner is built from
its source with both (and ``-Wall -Wextra -Werror``), loaded in place of the installed module in
a Python of its own, and the property tests of ``tests/test_scan_c.py`` run against it. Any
out-of-bounds access or undefined behaviour fails the run (leak checks are off: CPython's own
allocations would drown them)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = """
import importlib.util, sys
import hostd
spec = importlib.util.spec_from_file_location("hostd._scan", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["hostd._scan"] = module
import pytest
sys.exit(pytest.main(["tests/test_scan_c.py", "-q", "-p", "no:cacheprovider", "--basetemp", sys.argv[2]]))
"""


def _runtime(name: str) -> str:
    return subprocess.run(["cc", f"-print-file-name={name}"], capture_output=True, text=True, check=True).stdout.strip()


def test_the_scanner_is_clean_under_asan_and_ubsan(tmp_path: Path) -> None:
    so = tmp_path / "_scan.so"
    include = sysconfig.get_paths()["include"]
    flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-fno-omit-frame-pointer"]
    flags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fPIC", "-shared"]
    subprocess.run(["cc", *flags, f"-I{include}", str(ROOT / "hostd" / "_scan.c"), "-o", str(so)], check=True)
    env = {
        **os.environ,
        "LD_PRELOAD": f"{_runtime('libasan.so')} {_runtime('libubsan.so')}",
        "ASAN_OPTIONS": "detect_leaks=0",  # CPython's own allocations are not ours to judge
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(so), str(tmp_path / "pt")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-2000:]
