"""Tier markers follow the directory a test lives in, so `-m unit` etc. select whole tiers."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest
from pluggy import Result

from support.tools import in_ci

pytest_plugins = ["support.cluster_fixtures", "support.hsm_fixtures", "support.operator_fixtures"]

# tests/kind/ runs against a kind cluster that scripts/e2e-kind.sh (`make e2e-kind`) creates; it
# is collected only when that script sets PKCS11_ISSUER_E2E_KIND, never by `make test`.
collect_ignore = [] if os.environ.get("PKCS11_ISSUER_E2E_KIND") else ["kind"]

TIERS = ("unit", "hsm", "cluster", "container")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_root = Path(__file__).parent
    for item in items:
        relative = Path(str(item.fspath)).relative_to(tests_root)
        tier = relative.parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


def _tier(item: pytest.Item) -> str | None:
    for tier in TIERS:
        if item.get_closest_marker(tier):
            return tier
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Result[pytest.TestReport], None]:
    """Under CI=true a skipped hsm, cluster or container test is a failure: those tiers must
    really run there, whatever skipped them."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and _tier(item) in {"hsm", "cluster", "container"}:
        report.outcome = "failed"
        report.longrepr = f"CI=true: skipped tests count as failures here ({report.longrepr})"
