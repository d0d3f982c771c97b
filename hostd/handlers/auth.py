"""Placeholder: filled in by its own issue."""

from __future__ import annotations

from typing import Any

from hostd.handlers.base import Method

METHODS: tuple[Method[Any], ...] = ()
