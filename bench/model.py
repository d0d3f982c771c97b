"""Model stream relay: ``host.model.execute_stream`` + ``stream_read`` against a fake proxy's SSE.

Measured only once the model family has landed (``hostd/handlers/model.py`` serves the
methods and ``tests/support/fake_proxy.py`` exists); until then the section reports
``not measured: model family not merged``.
"""

from __future__ import annotations

from typing import Any

from bench.common import ROOT, BenchError, Settings

NOT_MERGED = "not measured: model family not merged"


def available() -> bool:
    if not (ROOT / "tests" / "support" / "fake_proxy.py").exists():
        return False
    try:
        from hostd.handlers import model
    except ImportError:
        return False
    names = {m.name for m in model.METHODS}
    return {"host.model.execute_stream", "host.model.stream_read"} <= names


def run(settings: Settings) -> dict[str, Any]:
    if not available():
        raise BenchError(NOT_MERGED)
    raise BenchError(NOT_MERGED)  # TODO(issue 6): measure events/s once the model family is merged
