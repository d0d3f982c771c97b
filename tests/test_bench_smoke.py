"""The benchmark harness runs end to end on tiny counts and writes well-formed results.

No timing is asserted: this only proves `make bench` works (the C client builds, every
section starts its processes, parses its figures and renders its table).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="the bench builds its load client with cc")


def _numbers(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")


# Figures that may legitimately be zero (error counts, events on a plain body, left-overs).
# CPU times come from a 10 ms clock: a tiny run may not register any.
ZERO_OK = ("errors", "events", "streams_left", "still_open", "open_streams", "hold_open", ".open", "last_close", "cpu")


def test_bench_tiny_run(tmp_path: Path) -> None:
    sections = ["calls", "relay", "model", "scale", "latency", "native", "footprint"]
    if importlib.util.find_spec("mcp") is not None:
        sections.insert(1, "peer")
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--preset", "tiny", "--only", ",".join(sections), "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "### Targets" in proc.stdout
    results = json.loads(out.read_text())
    assert set(results["sections"]) == set(sections)
    for name, data in results["sections"].items():
        if name == "model" and data.get("error", "").startswith("not measured"):
            continue  # the model family may not be there yet
        assert "error" not in data, f"{name}: {data.get('error')}"
        numbers = list(_numbers(data))
        assert numbers, name
        for path, value in numbers:
            if any(word in path for word in ZERO_OK):
                assert value >= 0, f"{name}{path} = {value}"
            else:
                assert value > 0, f"{name}{path} = {value}"
    assert results["targets"], "no targets evaluated"
    for target in results["targets"]:
        assert target["value"] > 0 and isinstance(target["met"], bool)
