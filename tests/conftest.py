"""Tier markers follow the directory a test lives in, so `-m unit` etc. select whole tiers."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["support.hsm_fixtures"]

TIERS = ("unit", "hsm", "cluster", "container")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_root = Path(__file__).parent
    for item in items:
        relative = Path(str(item.fspath)).relative_to(tests_root)
        tier = relative.parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
