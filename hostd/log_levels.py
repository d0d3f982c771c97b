"""Log levels: the numbers, their names, and the ``trace`` … ``error`` methods every logger has.

Shared by :mod:`hostd.logs` and ``host.log``. This module only names levels; it never
formats or writes a line.
"""

from __future__ import annotations

from typing import Any

TRACE, DEBUG, INFO, WARN, ERROR = 5, 10, 20, 30, 40
LEVELS = {"trace": TRACE, "debug": DEBUG, "info": INFO, "warn": WARN, "warning": WARN, "error": ERROR}
LEVEL_NAMES = {TRACE: "trace", DEBUG: "debug", INFO: "info", WARN: "warn", ERROR: "error"}


def parse_level(name: str, default: int = INFO) -> int:
    return LEVELS.get(name.strip().lower(), default)


class LevelMethods:
    """``trace`` … ``error`` for anything with ``log(level, msg, **fields)``."""

    def log(self, level: int, msg: str, **fields: Any) -> None:
        raise NotImplementedError

    def trace(self, msg: str, **fields: Any) -> None:
        self.log(TRACE, msg, **fields)

    def debug(self, msg: str, **fields: Any) -> None:
        self.log(DEBUG, msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self.log(INFO, msg, **fields)

    def warn(self, msg: str, **fields: Any) -> None:
        self.log(WARN, msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log(ERROR, msg, **fields)
