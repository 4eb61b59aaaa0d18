"""Polling until something holds, failing with what the caller can tell about why not."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    what: str,
    probe: Callable[[], Any],
    timeout: float = 60.0,
    *,
    diagnostics: Callable[[], str] = lambda: "",
    interval: float = 0.25,
) -> Any:
    """The first truthy `probe()` result; on timeout an AssertionError naming `what`, followed
    by `diagnostics()` (an operator's log tail, say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnostics()}")
