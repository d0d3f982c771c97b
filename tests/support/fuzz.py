"""The hypothesis profile of the generated-input tests: ``HOSTD_FUZZ_EXAMPLES`` examples in all
(a module's default when unset), split evenly over its ``parts`` (properties times variants),
derandomized unless a count is asked for, shrinking unless ``HOSTD_FUZZ_SHRINK=0``."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, Phase, settings


def fuzz_settings(default_total: int, parts: int) -> Any:
    total = int(os.environ.get("HOSTD_FUZZ_EXAMPLES", str(default_total)))
    return settings(
        max_examples=max(1, -(-total // parts)),  # rounded up: at least the total in all
        deadline=None,
        derandomize="HOSTD_FUZZ_EXAMPLES" not in os.environ,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
        print_blob=True,
        phases=[p for p in Phase if p is not Phase.shrink or os.environ.get("HOSTD_FUZZ_SHRINK", "1") == "1"],
    )
