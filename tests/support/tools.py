"""Deciding what a test does when a tool it needs is missing.

On a developer's laptop a missing tool is a skip that says how to get it. Under CI=true the
HSM, cluster and container tiers must really run, so the same situation is a failure.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str, how_to_get: str) -> None:
    """Skip (laptop) or fail (CI) because `what` is missing; never returns."""
    message = f"{what} is not available: {how_to_get}"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def need_executable(name: str, how_to_get: str = "run `make test`, which installs it") -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"`{name}`", how_to_get)
        raise AssertionError("unreachable")
    return path


def need_file(path: str, what: str, how_to_get: str = "run `make test`, which installs it") -> str:
    if not os.path.exists(path):
        unavailable(f"{what} ({path})", how_to_get)
    return path
